#!/usr/bin/env bash
# Helpers shared by the interop scripts (sourced from the repository root).

# A free loopback port (UDP and TCP), so runs never collide with anything else on the host.
free_port() {
  python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

# A free loopback port (UDP and TCP) in LOW..HIGH, for a listener that must stay out of a relay
# range (turnd's default 49152-65535 overlaps Linux's ephemeral ports, where free_port lands).
free_port_in() {
  python3 - "$1" "$2" <<'PY'
import random, socket, sys
low, high = int(sys.argv[1]), int(sys.argv[2])
for _ in range(200):
    p = random.randint(low, high)
    u, t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket()
    try:
        u.bind(("127.0.0.1", p)); t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
else:
    sys.exit("no free port in range")
PY
}

# Installs Debian package PACKAGE unless every command after it is already on PATH, so each
# script brings its own tools on a fresh machine:  need_debian coturn turnserver turnutils_peer
need_debian() {
  local package=$1; shift
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 && continue
    echo "installing Debian's $package (for $cmd)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    return
  done
}

# A scratch directory ($work) and a list for background processes ($pids): the processes are
# stopped and the directory removed when the script exits, however it exits.
scratch() {
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}
