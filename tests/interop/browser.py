"""Drives headless Chromium through turnd's relay test page over the DevTools protocol.

Runs inside a network namespace with only loopback (see browser.sh). Starts turnd on loopback
with the default peer policy (its two relayed addresses are its own, so they are allowed),
opens http://127.0.0.1:8080/?autorun&transport=X for X in udp and tcp, and waits (bounded) for
the page's window.turndResult.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

HTTP = "127.0.0.1:8080"
DEVTOOLS = 9222
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    f"--remote-debugging-port={DEVTOOLS}", "--remote-allow-origins=*",
]


def get(url, timeout=2):
    return urllib.request.urlopen(url, timeout=timeout).read().decode()


def wait_for(what, f, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.25)
    raise TimeoutError(what)


def run_page(transport):
    profile = tempfile.mkdtemp(prefix="turnd-chromium-")
    url = f"http://{HTTP}/?autorun&transport={transport}"
    browser = subprocess.Popen(
        ["chromium", *FLAGS, f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def page_ws():
            targets = json.loads(get(f"http://127.0.0.1:{DEVTOOLS}/json"))
            return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page" and HTTP in t.get("url", "")), None)

        ws = websocket.create_connection(wait_for("the page target", page_ws, 20), timeout=5, suppress_origin=True)

        def result():
            ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate",
                                "params": {"expression": "JSON.stringify(window.turndResult || null)", "returnByValue": True}}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == 1:
                    value = msg["result"]["result"].get("value")
                    return json.loads(value) if value and value != "null" else None

        try:
            return wait_for("the page's result", result, 40)
        except TimeoutError:
            ws.send(json.dumps({"id": 2, "method": "Runtime.evaluate", "params": {
                "expression": "document.title + ' | ' + document.getElementById('verdict').innerText + ' | ' + document.getElementById('timeline').innerText + ' | ' + document.getElementById('errors').innerText",
                "returnByValue": True}}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == 2:
                    print("page state:", msg["result"]["result"].get("value"))
                    break
            raise
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    turnd = subprocess.Popen(
        ["target/debug/turnd", "serve", "--listen", "127.0.0.1:3478", "--relay-ip", "127.0.0.1",
         "--http-listen", HTTP, "--metrics-listen", "off", "--secret", "browser-test-secret"],
        stderr=open(os.path.join(tempfile.gettempdir(), "turnd-browser.log"), "w"),
    )
    passed = failed = 0
    try:
        wait_for("turnd ready", lambda: '"ready":true' in get(f"http://{HTTP}/readyz"), 20)
        for transport in ["udp", "tcp"]:
            try:
                r = run_page(transport)
            except TimeoutError as e:
                print(f"FAIL chromium over {transport}: no result ({e})")
                failed += 1
                continue
            pair = r.get("pair") or {}
            local, remote = pair.get("local", {}), pair.get("remote", {})
            ok = (r.get("pass") and local.get("candidateType") == "relay" and remote.get("candidateType") == "relay"
                  and local.get("relayProtocol") == transport)
            if ok:
                passed += 1
                print(f"ok   chromium over {transport}: relay({local.get('relayProtocol')}) <-> relay({remote.get('relayProtocol')}), "
                      f"round trips {r.get('rttMs')} ms")
            else:
                failed += 1
                print(f"FAIL chromium over {transport}: step={r.get('step')} cause={r.get('cause')} pair={pair} errors={r.get('errors')}")
    finally:
        turnd.terminate()
        turnd.wait(timeout=10)
    print(f"browser: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
