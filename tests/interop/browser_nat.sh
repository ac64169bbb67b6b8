#!/usr/bin/env bash
# Headless Chromium behind Linux NATs: turnd's test page's "your network" section must give the
# same verdict as `turnd nat` (tests/nat_behaviour.rs) for a full-cone SNAT+DNAT (direct),
# MASQUERADE (direct), MASQUERADE --random-fully (relay), a router that drops UDP to the
# alternate address (alternate-silent) and one that drops all UDP (tcp-only). Chromium runs only inside the
# client namespace, whose one route leads to the router namespace and on to the server
# namespace: nothing here reaches another host. Bounded: < 60 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "browser_nat: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
python3 -c "import websocket" 2>/dev/null || pip install -q websocket-client
source tests/interop/lib.sh
need_debian iptables iptables
cargo build -q --bin turnd
TURND=$PWD/target/debug/turnd
KEY="browser-nat-api-key-$RANDOM$RANDOM"
tag="bn$$"
nss=()
turnd_pid=""
cleanup() {
  [ -n "$turnd_pid" ] && kill "$turnd_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  for n in "${nss[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT

run_case() { # NAME EXPECTED IPTABLES-RULES...
  local name=$1 expected=$2; shift 2
  local c="$tag-$name-c" r="$tag-$name-r" s="$tag-$name-s"
  for n in "$c" "$r" "$s"; do ip netns add "$n"; nss+=("$n"); ip -n "$n" link set lo up; done
  ip link add cli0 netns "$c" type veth peer name nat0 netns "$r"
  ip link add nat1 netns "$r" type veth peer name srv0 netns "$s"
  ip -n "$c" link set cli0 up; ip -n "$r" link set nat0 up; ip -n "$r" link set nat1 up; ip -n "$s" link set srv0 up
  ip -n "$c" addr add 10.99.1.2/24 dev cli0; ip -n "$c" route add default via 10.99.1.1
  ip -n "$r" addr add 10.99.1.1/24 dev nat0; ip -n "$r" addr add 10.99.2.254/24 dev nat1
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$s" addr add 10.99.2.1/24 dev srv0; ip -n "$s" addr add 10.99.2.2/24 dev srv0
  local rule
  for rule in "$@"; do eval "ip netns exec $r iptables $rule"; done
  ip netns exec "$s" "$TURND" serve --listen 10.99.2.1:3478 --stun-alternate 10.99.2.2:3479 \
    --stun-alternate-url --relay-ip 10.99.2.1 --relay-ports 40000-40999 \
    --http-listen 10.99.2.1:8080 --api-key "$KEY" --metrics-listen off --selftest-interval 0 \
    --workers 1 >"/tmp/$tag-$name-turnd.log" 2>&1 &
  turnd_pid=$!
  for _ in $(seq 1 50); do
    ip netns exec "$s" python3 -c 'import urllib.request; urllib.request.urlopen("http://10.99.2.1:8080/readyz", timeout=1)' 2>/dev/null && break
    sleep 0.2
  done
  local nat_json
  nat_json=$(ip netns exec "$c" "$TURND" nat --server 10.99.2.1:3478 --json --timeout-ms 1000 || true)
  echo "turnd nat ($name): $nat_json"
  timeout 60 ip netns exec "$c" python3 tests/interop/browser_nat.py 10.99.2.1:8080 "$KEY" "$expected"
  kill "$turnd_pid"; wait "$turnd_pid" 2>/dev/null || true; turnd_pid=""
  case "$nat_json" in *"\"verdict\":\"$expected\""*) ;; *) echo "FAIL: turnd nat disagrees ($name)"; exit 1;; esac
}

run_case cone direct "-t nat -A POSTROUTING -o nat1 -s 10.99.1.2 -j SNAT --to-source 10.99.2.254" \
  "-t nat -A PREROUTING -i nat1 -d 10.99.2.254 -j DNAT --to-destination 10.99.1.2"
run_case masq direct "-t nat -A POSTROUTING -o nat1 -j MASQUERADE"
run_case random relay "-t nat -A POSTROUTING -o nat1 -j MASQUERADE --random-fully"
run_case alt alternate-silent "-t nat -A POSTROUTING -o nat1 -j MASQUERADE" "-A FORWARD -p udp -d 10.99.2.2 -j DROP"
run_case noudp tcp-only "-t nat -A POSTROUTING -o nat1 -j MASQUERADE" "-A FORWARD -p udp -j DROP"
echo "browser_nat: the page and turnd nat agree for every NAT"
