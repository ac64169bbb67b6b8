#!/usr/bin/env bash
# The real image, without a registry: build it from deploy/Dockerfile's no-registry stage on a
# base made from this host's own C library, run turnd on two Docker networks this script
# creates, and check what an operator relies on. Where no Docker engine is available the step
# says so and is skipped; it never reports a pass it did not see.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! timeout 20 docker info >/dev/null 2>&1; then
  echo "docker: skipped: no Docker engine on this machine (nothing was tested)"
  exit 0
fi
cargo build -q --bin turnd
tag="ci$$"
work=$(mktemp -d)
API_KEY="docker-test-api-key-0123456789"
cleanup() {
  docker rm -f "turnd-$tag" >/dev/null 2>&1 || true
  docker network rm "turnd-srv-$tag" "turnd-cli-$tag" >/dev/null 2>&1 || true
  docker rmi -f "turnd:$tag" "turnd-base:$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; docker logs "turnd-$tag" 2>&1 | tail -20 || true; echo "docker: $passed passed, 1 failed"; exit 1; }

# 1. A runtime base from this host's libraries: the dynamic loader, libc, libm, libgcc_s (nss
#    files/dns are inside libc since glibc 2.34), a passwd with the nonroot user.
root="$work/rootfs"
mkdir -p "$root"/{etc,tmp,lib64,lib/x86_64-linux-gnu,usr/local/bin}
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for lib in $(ldd target/debug/turnd | awk '/=> \//{print $3}'); do cp -L "$lib" "$root/lib/x86_64-linux-gnu/"; done
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import - "turnd-base:$tag" >/dev/null

# 2. The image, from the Dockerfile's no-registry stage.
mkdir -p "$work/ctx/target/release"
cp target/debug/turnd "$work/ctx/target/release/turnd"
cp deploy/Dockerfile "$work/ctx/Dockerfile"
docker build -q --target runtime-prebuilt --build-arg "RUNTIME_BASE=turnd-base:$tag" -t "turnd:$tag" "$work/ctx" >/dev/null 2>"$work/build.log" \
  || { cat "$work/build.log"; fail "docker build"; }
ok "image built from deploy/Dockerfile (runtime-prebuilt) without a registry"

# 3. The compose file validates.
if command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose); else compose=(docker compose); fi
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
target/debug/turnd selftest --url "http://$CLI_IP:8080" --api-key "$API_KEY" --json >"$work/host.json" || { cat "$work/host.json"; fail "selftest from the host"; }
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
