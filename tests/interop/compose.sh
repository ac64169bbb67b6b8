#!/usr/bin/env bash
# The README's Docker Compose quick start, run as written: the shell blocks between the
# <!-- compose-quickstart -->, <!-- compose-check --> and <!-- compose-down --> markers of
# README.md are extracted and run with bash, so README and CI cannot drift apart. What differs
# from a person's run is all here and visible:
#   - Compose v2 (`docker compose`) when the machine has it, else v1 (`docker-compose`): the
#     README shows both; the command word is substituted.
#   - COMPOSE_FILE adds tests/interop/compose.ci.yml, which pins turnd's listeners, relay
#     address and public host to 127.0.0.1 on free ports: with host networking turnd would
#     otherwise bind and advertise this machine's own address, which tests never send to.
#   - The checks reach that loopback address instead of relay.example.com:8080 / :9641.
#   - COMPOSE_PROJECT_NAME and TURND_IMAGE are unique, so nothing of anyone else's is touched,
#     and everything this run creates is removed at the end (containers, network, image).
# No registry is needed: the README's path without one (deploy/build-image.sh) is the one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
source tests/interop/lib.sh

if ! timeout 20 docker info >/dev/null 2>&1; then
  echo "compose: skipped: no Docker engine on this machine (nothing was tested)"
  # In CI a skip would be a pass that saw nothing.
  [ -z "${CI:-}" ] || { echo "compose: CI must run this step: start the Docker engine"; exit 1; }
  exit 0
fi
if timeout 20 docker compose version >/dev/null 2>&1; then
  compose="docker compose"
else
  command -v docker-compose >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
  compose="docker-compose"
fi
echo "compose: using '$compose' ($($compose version --short 2>/dev/null || true))"

export COMPOSE_PROJECT_NAME="turnd-ci-$$"
export TURND_IMAGE="turnd:ci-compose-$$"
export COMPOSE_FILE="$root/deploy/docker-compose.yml:$root/tests/interop/compose.ci.yml"
# Below turnd's default relay range (49152-65535), which turnd keeps apart from its listeners.
CI_TURN_PORT=$(free_port_in 20000 32000); CI_HTTP_PORT=$(free_port_in 20000 32000); CI_METRICS_PORT=$(free_port_in 20000 32000)
while [ "$CI_HTTP_PORT" = "$CI_TURN_PORT" ]; do CI_HTTP_PORT=$(free_port_in 20000 32000); done
while [ "$CI_METRICS_PORT" = "$CI_TURN_PORT" ] || [ "$CI_METRICS_PORT" = "$CI_HTTP_PORT" ]; do CI_METRICS_PORT=$(free_port_in 20000 32000); done
export CI_TURN_PORT CI_HTTP_PORT CI_METRICS_PORT
# `turnd selftest` in the README's check runs the binary built by build-image.sh.
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export PATH="$target_dir/release:$PATH"

work=$(mktemp -d)
# A person's own deploy/.env (not in git) is put back afterwards.
[ ! -e deploy/.env ] || mv deploy/.env "$work/env.saved"
cleanup() {
  (cd deploy && timeout 60 $compose down --remove-orphans >/dev/null 2>&1) || true
  docker rmi -f "$TURND_IMAGE" >/dev/null 2>&1 || true
  rm -f deploy/.env
  [ ! -e "$work/env.saved" ] || mv "$work/env.saved" deploy/.env
  rm -rf "$work"
}
trap cleanup EXIT
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() {
  echo "FAIL $*"
  (cd deploy && $compose ps && $compose logs --tail 30 turnd) 2>&1 || true
  echo "compose: $passed passed, 1 failed"; exit 1
}

# One marked block of README.md: the lines inside its ```sh fence.
readme_block() {
  awk -v name="$1" '
    $0 == "<!-- " name " -->" { inside = 1; next }
    $0 == "<!-- /" name " -->" { inside = 0; next }
    inside && /^```/ { fence = !fence; next }
    inside && fence { print }' README.md
}
# Runs a block from the repository root in bash -e, after the substitutions above; the
# blocks after the first run in deploy/, where the first one leaves a person.
run_block() {
  local name=$1 dir=$2 limit=$3 script
  script=$(readme_block "$name")
  [ -n "$script" ] || fail "README.md has no <!-- $name --> block"
  script=${script//docker compose/$compose}
  script=${script//relay.example.com:8080/127.0.0.1:$CI_HTTP_PORT}
  script=${script//127.0.0.1:9641/127.0.0.1:$CI_METRICS_PORT}
  printf '%s\n' "--- README.md <!-- $name --> (run in $dir/)" "$script" "---"
  (cd "$dir" && timeout "$limit" bash -euo pipefail -c "$script") >"$work/$name.log" 2>&1 \
    || { cat "$work/$name.log"; fail "the README's $name block"; }
}

# No image of this run may exist beforehand: the quick start must build what it runs.
! docker image inspect "$TURND_IMAGE" >/dev/null 2>&1 || fail "$TURND_IMAGE exists before the run"

# 1. Copy .env.example, fill the secrets, build the image without a registry, up, healthy.
#    Building the release binary from nothing takes minutes on a small machine.
run_block compose-quickstart . 900
grep -qx 'TURND_EXTERNAL_IP=' deploy/.env || fail "TURND_EXTERNAL_IP is not left empty as .env.example says"
! grep -q 'change-me' deploy/.env || fail "the README's commands left a placeholder secret in .env"
ok "quick start: .env from .env.example (TURND_EXTERNAL_IP empty), image built without a registry, 'up' healthy"
id=$(cd deploy && $compose ps -q turnd)
[ "$(docker inspect -f '{{.Config.User}}' "$id")" = "65532:65532" ] || fail "the container does not run as 65532:65532"
[ "$(docker inspect -f '{{.HostConfig.NetworkMode}}' "$id")" = host ] || fail "the container does not use host networking"
[ "$(docker inspect -f '{{.Config.Image}}' "$id")" = "$TURND_IMAGE" ] || fail "the container does not run the image build-image.sh made"
[ "$(docker inspect -f '{{.RestartCount}}' "$id")" = 0 ] || fail "the container restarted"
ok "the turnd container runs build-image.sh's image as 65532:65532 on host networking, never restarted"
# The override did its job: every socket turnd has bound on this host is on loopback.
pid=$(docker inspect -f '{{.State.Pid}}' "$id")
ss -Htuanp | grep "pid=$pid," | awk '{print $5}' >"$work/sockets"
[ -s "$work/sockets" ] || fail "no sockets of turnd (pid $pid) found"
! grep -v '^127\.0\.0\.1:' "$work/sockets" || fail "turnd bound a non-loopback address (above)"
ok "turnd's $(wc -l <"$work/sockets") sockets on the host are all on 127.0.0.1"
services=$(docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --format '{{.Label "com.docker.compose.service"}}' | sort | xargs)
[ "$services" = turnd ] || fail "'up' without a profile started: $services (Prometheus is pulled, so only with --profile monitoring)"
ok "'up' without a profile starts turnd alone (Prometheus waits for --profile monitoring)"

# 2. Credentials with the API key, a relay-only self-test with them, metrics.
run_block compose-check deploy 120
grep -q '"iceServers"' "$work/compose-check.log" || fail "no ICE servers in the credential answer"
grep -q 'every transport passed' "$work/compose-check.log" || fail "turnd selftest did not pass"
grep -q '^turnd_allocations_total [1-9]' "$work/compose-check.log" || fail "metrics show no allocation"
ok "the README's checks: ICE servers fetched with the API key, turnd selftest --url passes, metrics scraped"

# 3. down: turnd drains and exits; nothing of the project is left.
run_block compose-down deploy 60
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ] \
  || fail "containers left after 'down'"
ok "'$compose down' stops and removes the deployment"
echo "compose: $passed passed, 0 failed"
