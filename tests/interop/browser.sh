#!/usr/bin/env bash
# Headless Chromium (Debian's package) runs turnd's own test page (/) relay-only over turn:
# UDP and TCP URLs and must report PASS with a relay<->relay pair. Chromium runs ONLY inside a
# private network namespace that holds nothing but loopback, so it cannot reach any other host.
# Then turns: with a certificate turnd got by ACME from Debian's pebble, in the same namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "browser: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v pebble >/dev/null 2>&1 || ! command -v certutil >/dev/null 2>&1; then
  echo "browser: installing Debian's pebble (ACME test CA) and libnss3-tools (certutil)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pebble libnss3-tools >/dev/null
fi
python3 -c "import websocket" 2>/dev/null || pip install -q websocket-client
cargo build -q --bin turnd

if [ "${TURND_IN_NETNS:-}" != 1 ]; then
  # A new network namespace: only `lo`, brought up inside.
  exec unshare --net -- env TURND_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
exec python3 tests/interop/browser.py
