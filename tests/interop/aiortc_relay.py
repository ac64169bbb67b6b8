"""Two aiortc peers (a WebRTC stack nobody here wrote) connect relay-only through turnd and
exchange data-channel messages both ways. ICE servers are fetched from turnd's HTTP endpoint
the way a Python app does it. Usage: aiortc_relay.py HTTP_URL TRANSPORT (udp|tcp)."""

import asyncio
import json
import sys
import urllib.request

from aiortc import (RTCConfiguration, RTCIceServer, RTCIceTransportPolicy,
                    RTCPeerConnection)


def ice_servers(http, transport):
    data = json.load(urllib.request.urlopen(f"{http}/api/v1/ice-servers?format=array&username=aiortc", timeout=5))
    servers = []
    for s in data:
        urls = [u for u in s["urls"] if u.startswith("turn:") and u.endswith(f"transport={transport}")]
        if urls:
            servers.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    assert servers, f"turnd handed out no turn: URL for {transport}"
    return servers


async def main(http, transport):
    config = RTCConfiguration(iceServers=ice_servers(http, transport), iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    opened = asyncio.Event()
    got_a, got_b = [], []
    channel = a.createDataChannel("turnd-interop")

    @channel.on("open")
    def _():
        opened.set()

    @channel.on("message")
    def _(m):
        got_a.append(m)

    @b.on("datachannel")
    def _(ch):
        @ch.on("message")
        def _(m):
            got_b.append(m)
            ch.send("echo " + m)

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    for sdp in (a.localDescription.sdp, b.localDescription.sdp):
        kinds = {line.split()[7] for line in sdp.splitlines() if line.startswith("a=candidate:")}
        assert kinds == {"relay"}, f"only relay candidates may be offered, got {kinds}"

    await asyncio.wait_for(opened.wait(), 20)
    for i in range(5):
        channel.send(f"ping {i}")
    for _ in range(100):
        if len(got_a) >= 5:
            break
        await asyncio.sleep(0.05)
    await a.close()
    await b.close()
    assert got_b == [f"ping {i}" for i in range(5)], got_b
    assert got_a == [f"echo ping {i}" for i in range(5)], got_a
    print(f"ok   aiortc over {transport}: data channel open, 5 messages each way through turnd")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 40))
