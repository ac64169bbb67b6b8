#!/usr/bin/env bash
# aiortc (PyPI) connects relay-only through turnd over UDP and over TCP, with ICE servers from
# turnd's HTTP endpoint. Loopback only; bounded by timeouts. Installs aiortc if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import aiortc" 2>/dev/null || pip install -q aiortc
cargo build -q --bin turnd
source tests/interop/lib.sh
PORT=$(free_port); HTTP=$(free_port)
scratch

# Default peer policy: the two relayed addresses are turnd's own, so they are allowed.
target/debug/turnd serve --listen "127.0.0.1:$PORT" --relay-ip 127.0.0.1 --relay-ports 22000-22999 \
  --http-listen "127.0.0.1:$HTTP" --metrics-listen off --secret aiortc-test-secret >"$work/turnd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  python3 -c "import urllib.request,sys; sys.exit(0 if b'\"ready\":true' in urllib.request.urlopen('http://127.0.0.1:$HTTP/readyz', timeout=1).read() else 1)" 2>/dev/null && break
  sleep 0.2
done

passed=0; failed=0
for transport in udp tcp; do
  if timeout 60 python3 tests/interop/aiortc_relay.py "http://127.0.0.1:$HTTP" "$transport"; then
    passed=$((passed + 1))
  else
    echo "FAIL aiortc over $transport"; failed=$((failed + 1))
  fi
done
if [ "$failed" != 0 ]; then tail -20 "$work/turnd.log"; fi
echo "aiortc: $passed passed, $failed failed"
[ "$failed" = 0 ]
