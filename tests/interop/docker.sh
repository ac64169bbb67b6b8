#!/usr/bin/env bash
# The real image, without a registry: built by deploy/build-image.sh (the README's command),
# run on two Docker networks this script creates, and checked for what an operator relies on.
# Where no Docker engine is available the step says so and is skipped; it never reports a pass
# it did not see.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! timeout 20 docker info >/dev/null 2>&1; then
  echo "docker: skipped: no Docker engine on this machine (nothing was tested)"
  # In CI a skip would be a pass that saw nothing.
  [ -z "${CI:-}" ] || { echo "docker: CI must run this step: start the Docker engine"; exit 1; }
  exit 0
fi
tag="ci$$"
work=$(mktemp -d)
API_KEY="docker-test-api-key-0123456789"
cleanup() {
  docker rm -f "turnd-$tag" >/dev/null 2>&1 || true
  docker network rm "turnd-srv-$tag" "turnd-cli-$tag" >/dev/null 2>&1 || true
  docker rmi -f "turnd:$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; docker logs "turnd-$tag" 2>&1 | tail -20 || true; echo "docker: $passed passed, 1 failed"; exit 1; }

# 1-2. The image, by deploy/build-image.sh, with CARGO_TARGET_DIR pointing outside the
#      repository (a link to its target/, so nothing is rebuilt): the script must find the
#      binary through cargo and stage it into the build context, not assume target/.
ln -s "$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')" "$work/target"
CARGO_TARGET_DIR="$work/target" TURND_IMAGE="turnd:$tag" deploy/build-image.sh >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; fail "deploy/build-image.sh"; }
grep -q "staged in the context as target/image/turnd" "$work/build.log" || { cat "$work/build.log"; fail "build-image.sh did not stage the binary"; }
[ ! -e target/image ] || fail "build-image.sh left its staged binary behind"
[ -z "$(docker images -q --filter 'reference=turnd-base:build-*')" ] || fail "build-image.sh left a base image behind"
turnd="$work/target/release/turnd"
ok "deploy/build-image.sh built turnd:$tag without a registry, with CARGO_TARGET_DIR outside the repository"

# 3. The compose file validates (tests/interop/compose.sh runs it).
if timeout 20 docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
"${compose[@]}" -f deploy/docker-compose.yml --env-file deploy/.env.example config -q
ok "docker compose config validates deploy/docker-compose.yml"

# 4. Two networks this script creates: turnd sits on both; clients live on the second only.
for _ in 1 2 3 4 5; do
  a=$((RANDOM % 200 + 20))
  if docker network create --subnet "10.213.$a.0/24" "turnd-srv-$tag" >/dev/null 2>&1; then
    if docker network create --subnet "10.214.$a.0/24" "turnd-cli-$tag" >/dev/null 2>&1; then break; fi
    docker network rm "turnd-srv-$tag" >/dev/null
  fi
done
SRV_IP="10.213.$a.10"; CLI_IP="10.214.$a.10"
printf 'docker-test-shared-secret\n' >"$work/secret"; chmod 644 "$work/secret"
docker create --name "turnd-$tag" --network "turnd-srv-$tag" --ip "$SRV_IP" \
  --health-interval 1s --health-start-period 1s \
  -v "$work/secret:/run/secrets/turnd_secret:ro" \
  -e TURND_SECRET_FILE=/run/secrets/turnd_secret -e TURND_API_KEY="$API_KEY" \
  -e TURND_RELAY_IP="$CLI_IP" -e TURND_PUBLIC_HOST="$CLI_IP" -e TURND_RELAY_PORTS=40000-40999 \
  -e TURND_METRICS_LISTEN=0.0.0.0:9641 -e TURND_SELFTEST_INTERVAL=2 \
  "turnd:$tag" >/dev/null
docker network connect --ip "$CLI_IP" "turnd-cli-$tag" "turnd-$tag"
docker start "turnd-$tag" >/dev/null
for _ in $(seq 1 60); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "turnd-$tag")" = healthy ] && break
  sleep 1
done
[ "$(docker inspect -f '{{.State.Health.Status}}' "turnd-$tag")" = healthy ] || fail "the container never became healthy"
[ "$(docker inspect -f '{{.Config.User}}' "turnd-$tag")" = "65532:65532" ] || fail "the image does not run as the nonroot user"
ok "the container runs as 65532:65532 and becomes healthy through 'turnd healthcheck'"

# 5. From a second container on the client network only: relay-only self-test with
#    credentials from the HTTP endpoint, over UDP and TCP.
docker run --rm --network "turnd-cli-$tag" "turnd:$tag" selftest --url "http://$CLI_IP:8080" --api-key "$API_KEY" >"$work/selftest.log" 2>&1 \
  || { cat "$work/selftest.log"; fail "selftest from a second container"; }
grep -q "every transport passed" "$work/selftest.log" || fail "selftest output"
ok "turnd selftest --url from a container on another network passes relay-only ($(grep -c PASS "$work/selftest.log") transports)"

# 6. From the host: credentials over HTTP work (the self-test allocates with them), metrics scrape.
"$turnd" selftest --url "http://$CLI_IP:8080" --api-key "$API_KEY" --json >"$work/host.json" || { cat "$work/host.json"; fail "selftest from the host"; }
ok "credentials fetched over HTTP from the host allocate and relay"
python3 - "$CLI_IP" <<'PY' || fail "metrics scrape"
import sys, urllib.request
body = urllib.request.urlopen(f"http://{sys.argv[1]}:9641/metrics", timeout=5).read().decode()
v = [float(l.split()[-1]) for l in body.splitlines() if l.startswith("turnd_allocations_total ")]
assert v and v[0] >= 4, v
PY
ok "metrics scraped from the container"

# 7. docker stop drains and exits 0 within the grace period.
start=$(date +%s)
docker stop -t 10 "turnd-$tag" >/dev/null
took=$(( $(date +%s) - start ))
code=$(docker inspect -f '{{.State.ExitCode}}' "turnd-$tag")
[ "$code" = 0 ] && [ "$took" -lt 10 ] || fail "docker stop: exit code $code after ${took}s"
ok "docker stop: exit 0 after ${took}s (grace 10s)"
echo "docker: $passed passed, 0 failed"
