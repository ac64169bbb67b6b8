#!/usr/bin/env bash
# `turnd selftest` against a TURN server nobody here wrote: Debian's coturn (turnserver) in
# REST-secret mode, over UDP and TCP. Loopback only; bounded. Installs coturn if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/interop/lib.sh
need_debian coturn turnserver
cargo build -q --bin turnd
PORT=$(free_port)
SECRET="coturn-rest-secret"
scratch

# coturn refuses loopback peers unless told; its relays are on loopback here.
turnserver -n --no-cli --no-tls --no-dtls --listening-ip 127.0.0.1 --listening-port "$PORT" \
  --relay-ip 127.0.0.1 --min-port 23000 --max-port 23999 --allow-loopback-peers \
  --use-auth-secret --static-auth-secret "$SECRET" --realm turnd-interop \
  --pidfile "$work/turnserver.pid" --log-file "$work/turnserver.log" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  timeout 2 turnutils_stunclient -p "$PORT" 127.0.0.1 >/dev/null 2>&1 && break
  sleep 0.2
done

if timeout 60 target/debug/turnd selftest --server "127.0.0.1:$PORT" --secret "$SECRET" --transport udp --transport tcp; then
  echo "coturn-selftest: 1 passed, 0 failed"
else
  echo "--- turnserver log"; tail -20 "$work"/turnserver*.log 2>/dev/null || true
  echo "coturn-selftest: 0 passed, 1 failed"
  exit 1
fi
