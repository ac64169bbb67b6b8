#!/usr/bin/env bash
# schemathesis (PyPI, pinned) generates requests from docs/admin-openapi.json and
# docs/openapi.json and sends them to a local turnd: no answer may be a 500, and every answer's
# status, content type and body must be what the description documents. Loopback only; each
# run bounded (20 examples per operation, an outer timeout of 60 s; a few seconds in practice). The venv is cached
# between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
SCHEMATHESIS_VERSION=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/turnd-schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build -q --bin turnd
source tests/interop/lib.sh
PORT=$(free_port_in 20000 29999); HTTP=$(free_port); METRICS=$(free_port)
ADMIN_KEY=schemathesis-admin-key-0123
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# No rate limit: the generated requests would mostly meet 429 and leave the handlers untested.
target/debug/turnd serve --listen "127.0.0.1:$PORT" --relay-ip 127.0.0.1 --relay-ports 30000-30099 \
  --http-listen "127.0.0.1:$HTTP" --metrics-listen "127.0.0.1:$METRICS" --http-rate-limit 0 \
  --selftest-interval 0 --secret schemathesis-secret-0123 --admin-key "$ADMIN_KEY" >"$work/turnd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  python3 -c "import urllib.request,sys; sys.exit(0 if b'\"ready\":true' in urllib.request.urlopen('http://127.0.0.1:$HTTP/readyz', timeout=1).read() else 1)" 2>/dev/null && break
  sleep 0.2
done

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
failed=0
run() {
  local name=$1; shift
  # Run from the scratch directory: schemathesis leaves a .schemathesis/ cache where it runs.
  if (cd "$work" && timeout 60 "$venv/bin/st" run "$@" --checks "$checks" --max-examples 20 \
      --warnings off) >"$work/$name.out" 2>&1; then
    echo "schemathesis $name: $(grep -E 'generated' "$work/$name.out" | tr -s ' ')"
  else
    echo "FAIL schemathesis $name"; tail -60 "$work/$name.out"; failed=$((failed + 1))
  fi
}
run admin "$PWD/docs/admin-openapi.json" --url "http://127.0.0.1:$METRICS" -H "Authorization: Bearer $ADMIN_KEY"
run credentials "$PWD/docs/openapi.json" --url "http://127.0.0.1:$HTTP"
if [ "$failed" != 0 ]; then tail -20 "$work/turnd.log"; fi
[ "$failed" = 0 ]
