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
