#!/usr/bin/env python3
"""Records real client packets for the fuzz corpus: a proxy between coturn's
turnutils_uclient (a client nobody here wrote) and turnd on loopback writes every datagram the
client sends (UDP mode) and the byte stream of each TCP connection (TCP mode) into
fuzz/seeds/. Run by hand (fuzz/capture_seeds.sh); the captured files are committed.

Usage: capture_seeds.py LISTEN_PORT TURND_PORT OUT_DIR SECONDS
"""
import os
import select
import socket
import sys
import time

listen_port, turnd_port, out_dir, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
os.makedirs(out_dir, exist_ok=True)
turnd = ("127.0.0.1", turnd_port)

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", listen_port))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", listen_port))
tcp.listen(16)

upstream = {}  # client address -> socket towards turnd (UDP)
back = {}  # upstream socket -> client address
streams = {}  # client conn -> (turnd conn, recorded bytes)
pairs = {}  # turnd conn -> client conn
n = 0
deadline = time.time() + seconds
while time.time() < deadline:
    socks = [udp, tcp] + list(back) + list(streams) + list(pairs)
    ready, _, _ = select.select(socks, [], [], 0.2)
    for s in ready:
        if s is udp:
            data, addr = udp.recvfrom(65535)
            if addr not in upstream:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.connect(turnd)
                upstream[addr], back[u] = u, addr
            upstream[addr].send(data)
            if n < 400:
                with open(os.path.join(out_dir, f"udp-{n:04d}.bin"), "wb") as f:
                    f.write(data)
                n += 1
        elif s is tcp:
            c, _ = tcp.accept()
            t = socket.create_connection(turnd)
            streams[c], pairs[t] = (t, bytearray()), c
        elif s in back:
            udp.sendto(s.recv(65535), back[s])
        elif s in streams:
            t, rec = streams[s]
            data = s.recv(65535)
            if not data:
                t.close(); s.close(); del pairs[t]; del streams[s]
                with open(os.path.join(out_dir, f"tcp-{n:04d}.bin"), "wb") as f:
                    f.write(rec[:16384])
                n += 1
                continue
            rec.extend(data)
            t.sendall(data)
        elif s in pairs:
            data = s.recv(65535)
            c = pairs[s]
            if not data:
                s.close(); c.close()
                t, rec = streams.pop(c)
                del pairs[s]
                with open(os.path.join(out_dir, f"tcp-{n:04d}.bin"), "wb") as f:
                    f.write(rec[:16384])
                n += 1
                continue
            c.sendall(data)
print(f"captured {n} files in {out_dir}")
