#!/usr/bin/env bash
# Interop, RFC 5780 both ways, on two loopback addresses (127.0.0.1 primary, 127.0.0.2
# alternate):
# * coturn's turnutils_natdiscovery (a client nobody here wrote) against turnd with
#   `stun_alternate` gives the same mapping and filtering verdict lines as against coturn's
#   turnserver on the same two addresses;
# * `turnd nat` against that coturn gives the same verdicts as against turnd.
# A server that ignored CHANGE-REQUEST, answered it from the wrong socket or left out
# OTHER-ADDRESS would change the verdicts. Bounded: every step under `timeout`, < 60 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

source tests/interop/lib.sh
need_debian coturn turnutils_natdiscovery turnserver
cargo build -q --bin turnd
TURND=target/debug/turnd
scratch

# Ports outside both servers' relay ranges; the alternate port is the next one (coturn's rule,
# which turnd's stun_alternate follows here for symmetry).
pick_pair() {
  for _ in $(seq 1 50); do
    local p; p=$(free_port_in 30000 39000)
    if python3 - "$p" <<'PY'
import socket, sys
p = int(sys.argv[1]) + 1
for ip in ("127.0.0.1", "127.0.0.2"):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind); s.bind((ip, p)); s.close()
PY
    then echo "$p"; return 0; fi
  done
  echo "no free port pair" >&2; return 1
}

wait_stun() { # PORT LOG
  for _ in $(seq 1 50); do
    if timeout 2 turnutils_stunclient -p "$1" 127.0.0.2 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "interop: no STUN answer on 127.0.0.2:$1"; tail -20 "$2"; exit 1
}

TURND_PORT=$(pick_pair)
"$TURND" serve --listen "127.0.0.1:$TURND_PORT" --stun-alternate "127.0.0.2:$((TURND_PORT + 1))" \
  --relay-ip 127.0.0.1 --relay-ports 20000-20999 --http-listen off --metrics-listen off \
  --selftest-interval 0 >"$work/turnd.log" 2>&1 &
pids+=($!)
wait_stun "$((TURND_PORT + 1))" "$work/turnd.log"

COTURN_PORT=$(pick_pair)
rfc5780_flag=()
# Newer coturn wants --rfc5780 for it; older ones (4.6) turn it on with two listening IPs.
if turnserver --help 2>&1 | grep -q -- '--rfc5780'; then rfc5780_flag=(--rfc5780); fi
turnserver -n "${rfc5780_flag[@]}" --listening-ip 127.0.0.1 --listening-ip 127.0.0.2 \
  --listening-port "$COTURN_PORT" --no-tls --no-dtls --no-cli --relay-ip 127.0.0.1 \
  --min-port 21000 --max-port 21999 --log-file stdout --simple-log >"$work/coturn.log" 2>&1 &
pids+=($!)
wait_stun "$((COTURN_PORT + 1))" "$work/coturn.log"

natdiscovery() { # PORT → the verdict lines ("NAT with ... Mapping!", "... Filtering!")
  timeout 30 turnutils_natdiscovery -m -f -p "$1" 127.0.0.1 2>&1 | tee -a "$work/natdiscovery.log" \
    | grep -E '^NAT with .*(Mapping|Filtering)!$' || true
}
turnd_nat() { # PORT → "mapping filtering verdict"
  timeout 30 "$TURND" nat --server "127.0.0.1:$1" --json --timeout-ms 1000 \
    | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["mapping"], j["filtering"], j["verdict"])'
}

against_turnd=$(natdiscovery "$TURND_PORT")
against_coturn=$(natdiscovery "$COTURN_PORT")
echo "turnutils_natdiscovery → turnd:  ${against_turnd//$'\n'/ | }"
echo "turnutils_natdiscovery → coturn: ${against_coturn//$'\n'/ | }"
if [ "$(echo "$against_turnd" | wc -l)" -ne 2 ] || [ "$against_turnd" != "$against_coturn" ]; then
  echo "interop: turnutils_natdiscovery's verdicts differ (or are missing)"
  tail -40 "$work/natdiscovery.log"; exit 1
fi

nat_turnd=$(turnd_nat "$TURND_PORT")
nat_coturn=$(turnd_nat "$COTURN_PORT")
echo "turnd nat → turnd:  $nat_turnd"
echo "turnd nat → coturn: $nat_coturn"
if [ "$nat_turnd" != "$nat_coturn" ] || [[ "$nat_turnd" == *None* ]]; then
  echo "interop: turnd nat's verdicts differ between the servers (or were not measured)"; exit 1
fi
echo "interop: RFC 5780 NAT discovery agrees both ways"
