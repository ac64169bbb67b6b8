#!/usr/bin/env bash
# Interop: coturn's turnutils_uclient (a client nobody here wrote) against turnd, with
# turnutils_peer as the UDP echo peer. Every mode must report 0% loss.
# Loopback only; every run is bounded by `timeout`. Installs Debian's coturn if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v turnutils_uclient >/dev/null 2>&1; then
  echo "interop: installing Debian's coturn for turnutils_uclient/turnutils_peer"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null
fi

cargo build -q --bin turnd
source tests/interop/lib.sh
TURND=target/debug/turnd
SECRET="interop-shared-secret"
PORT=${TURND_INTEROP_PORT:-$(free_port)}
PEER_PORT=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The echo peer lives on loopback, which the default policy refuses: allow it explicitly.
# uclient picks RFC 5766 channel numbers (up to 0x7FFF): enable them explicitly.
"$TURND" serve --listen "127.0.0.1:$PORT" --relay-ip 127.0.0.1 --relay-ports 40000-40999 \
  --secret "$SECRET" --user interop:interop-password --allow-peer 127.0.0.1/32 \
  --legacy-channel-numbers --user-quota 0 >"$work/turnd.log" 2>&1 &
pids+=($!)
turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$work/peer.log" 2>&1 &
pids+=($!)

ready=0
for _ in $(seq 1 50); do
  if timeout 2 turnutils_stunclient -p "$PORT" 127.0.0.1 >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ "$ready" = 1 ] || { echo "interop: turnd did not answer STUN"; cat "$work/turnd.log"; exit 1; }

failed=0
run() {
  local name=$1; shift
  local out="$work/$name.log"
  if ! timeout 120 turnutils_uclient "$@" -e 127.0.0.1 -r "$PEER_PORT" -n 100 -m 10 -l 170 -p "$PORT" 127.0.0.1 >"$out" 2>&1; then
    echo "FAIL $name: uclient exited non-zero"; tail -5 "$out"; failed=1; return
  fi
  local line
  line=$(grep -E "Total lost packets" "$out" | tail -1 || true)
  if [[ "$line" =~ Total\ lost\ packets\ 0\ \(0\.0+%\),\ total\ send\ dropped\ 0\  ]] && ! grep -qi "error" "$out"; then
    echo "ok   $name: $line"
  else
    echo "FAIL $name: ${line:-no loss report}"; grep -i error "$out" | sort | uniq -c | head -5; failed=1
  fi
}

run channels-rest          -W "$SECRET" -u alice
run channels-static        -u interop -w interop-password
run send-indication-rest   -s -W "$SECRET" -u bob
run send-indication-static -s -u interop -w interop-password
run client-to-client       -y -W "$SECRET" -u carol
run no-rtcp-bare-timestamp -c -W "$SECRET"

if [ "$failed" != 0 ]; then
  echo "--- turnd log"; tail -20 "$work/turnd.log"
  echo "interop: 0 passed, 1 failed"
  exit 1
fi
echo "interop: 6 passed, 0 failed"
