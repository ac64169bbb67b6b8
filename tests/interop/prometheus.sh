#!/usr/bin/env bash
# Metrics the way an operator uses them: promtool checks a real scrape, and a real Prometheus
# server on loopback scrapes turnd with deploy/prometheus/prometheus.yml (adapted to loopback
# ports) until its query API returns turnd_allocations_total. Installs Debian's prometheus
# (and coturn, for a client that allocates) if missing. Loopback only; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
if [ ${#need[@]} -gt 0 ]; then
  echo "metrics: installing ${need[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build -q --bin turnd
source tests/interop/lib.sh
PORT=${TURND_METRICS_TEST_PORT:-$(free_port)}
METRICS=$(free_port); PROM=$(free_port)
scratch

fetch() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }

target/debug/turnd serve --listen "127.0.0.1:$PORT" --relay-ip 127.0.0.1 --relay-ports 21000-21999 \
  --legacy-channel-numbers --secret metrics-test-secret --http-listen off --metrics-listen "127.0.0.1:$METRICS" >"$work/turnd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do fetch "http://127.0.0.1:$METRICS/metrics" >/dev/null 2>&1 && break; sleep 0.2; done

# Two clients of turnd talking to each other through their relays (allowed by default).
timeout 60 turnutils_uclient -y -c -n 10 -m 1 -W metrics-test-secret -u prom -p "$PORT" 127.0.0.1 >"$work/uclient.log" 2>&1 || {
  echo "metrics: uclient failed"; tail -5 "$work/uclient.log"; exit 1; }

fetch "http://127.0.0.1:$METRICS/metrics" >"$work/scrape.txt"
promtool check metrics <"$work/scrape.txt"
echo "ok   promtool check metrics on a real scrape ($(grep -c '^turnd_' "$work/scrape.txt") samples)"

cp deploy/prometheus/turnd-alerts.yml "$work/"
sed -e "s/127.0.0.1:9641/127.0.0.1:$METRICS/" -e "s/scrape_interval: 15s/scrape_interval: 1s/" \
  deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
promtool check rules deploy/prometheus/turnd-alerts.yml >/dev/null
echo "ok   promtool check config and rules"

prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$PROM" >"$work/prometheus.log" 2>&1 &
pids+=($!)
query="http://127.0.0.1:$PROM/api/v1/query?query=turnd_allocations_total"
for _ in $(seq 1 60); do
  if answer=$(fetch "$query" 2>/dev/null) && python3 - "$answer" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
r = d["data"]["result"]
sys.exit(0 if d["status"] == "success" and r and float(r[0]["value"][1]) >= 2 else 1)
PY
  then
    echo "ok   Prometheus query API: $answer"
    echo "metrics: 3 passed, 0 failed"
    exit 0
  fi
  sleep 1
done
echo "metrics: Prometheus never returned turnd_allocations_total"; tail -20 "$work/prometheus.log"
echo "metrics: 0 passed, 1 failed"
exit 1
