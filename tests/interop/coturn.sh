#!/usr/bin/env bash
# Interop: coturn's turnutils_uclient (a client nobody here wrote) against turnd, with
# turnutils_peer as the UDP echo peer. Every mode must report 0% loss.
# Loopback only; every run is bounded by `timeout`. Installs Debian's coturn if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

source tests/interop/lib.sh
need_debian coturn turnutils_uclient turnutils_peer
cargo build -q --bin turnd
TURND=target/debug/turnd
SECRET="interop-shared-secret"
PORT=${TURND_INTEROP_PORT:-$(free_port)}
PEER_PORT=$(free_port)
scratch

# A self-signed certificate for the TLS listener.
need_debian openssl openssl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1
# The echo peer lives on loopback, which the default policy refuses: allow it explicitly.
# uclient picks RFC 5766 channel numbers (up to 0x7FFF): enable them explicitly.
# uclient exits without deallocating, so every mode gets a fresh turnd: a later client whose
# ephemeral port matches a stale allocation's 5-tuple would otherwise (rightly) be refused.
turnd_pid=""
start_turnd() {
  PORT=$(free_port); TLS_PORT=$(free_port)
  "$TURND" serve --listen "127.0.0.1:$PORT" --relay-ip 127.0.0.1 --relay-ports 20000-20999 \
    --http-listen off --metrics-listen off \
    --tls-listen "127.0.0.1:$TLS_PORT" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    --secret "$SECRET" --user interop:interop-password --allow-peer 127.0.0.1/32 \
    --legacy-channel-numbers --user-quota 0 >>"$work/turnd.log" 2>&1 &
  turnd_pid=$!
  pids+=("$turnd_pid")
  for _ in $(seq 1 50); do
    if timeout 2 turnutils_stunclient -p "$PORT" 127.0.0.1 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "interop: turnd did not answer STUN"; tail -20 "$work/turnd.log"; exit 1
}
stop_turnd() {
  kill "$turnd_pid" 2>/dev/null || true
  wait "$turnd_pid" 2>/dev/null || true
}

turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$work/peer.log" 2>&1 &
pids+=($!)

failed=0
# uclient opens TLS with a random choice of TLS 1.0/1.1/1.2 contexts and retries on failure;
# turnd speaks TLS 1.2 and 1.3 only, so the refused 1.0/1.1 attempts are not errors here.
TLS_PROBES="sslv3 alert handshake failure|tls_connect: cannot connect"
run() {
  local name=$1 listener=$2; shift 2
  local out="$work/$name.log"
  start_turnd
  local port=$PORT
  [ "$listener" = tls ] && port=$TLS_PORT
  local rc=0
  timeout 120 turnutils_uclient "$@" -e 127.0.0.1 -r "$PEER_PORT" -n 100 -m 10 -l 170 -p "$port" 127.0.0.1 >"$out" 2>&1 || rc=$?
  stop_turnd
  if [ "$rc" != 0 ]; then
    echo "FAIL $name: uclient exited non-zero"; tail -5 "$out"; failed=1; return
  fi
  local line
  line=$(grep -E "Total lost packets" "$out" | tail -1 || true)
  if [[ "$line" =~ Total\ lost\ packets\ 0\ \(0\.0+%\),\ total\ send\ dropped\ 0\  ]] && ! grep -vE "$TLS_PROBES" "$out" | grep -qi "error"; then
    echo "ok   $name: $line"
  else
    echo "FAIL $name: ${line:-no loss report}"; grep -i error "$out" | sort | uniq -c | head -5; failed=1
  fi
}

run channels-rest          plain -W "$SECRET" -u alice
run channels-static        plain -u interop -w interop-password
run send-indication-rest   plain -s -W "$SECRET" -u bob
run send-indication-static plain -s -u interop -w interop-password
run client-to-client       plain -y -W "$SECRET" -u carol
run no-rtcp-bare-timestamp plain -c -W "$SECRET"
run tcp-channels           plain -t -W "$SECRET" -u dave
run tcp-send-indication    plain -t -s -u interop -w interop-password
run tcp-client-to-client   plain -t -y -W "$SECRET" -u erin
run tls-channels           tls -t -S -W "$SECRET" -u frank
run tls-send-indication    tls -t -S -s -u interop -w interop-password
run tls-client-to-client   tls -t -S -y -W "$SECRET" -u grace

if [ "$failed" != 0 ]; then
  echo "--- turnd log"; tail -20 "$work/turnd.log"
  echo "interop: 0 passed, 1 failed"
  exit 1
fi
echo "interop: 12 passed, 0 failed"
