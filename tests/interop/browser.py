"""Drives headless Chromium through turnd's relay test page over the DevTools protocol.

Runs inside a network namespace with only loopback (see browser.sh). Starts turnd on loopback
with the default peer policy (its two relayed addresses are its own, so they are allowed),
opens http://127.0.0.1:8080/?autorun&transport=X for X in udp and tcp, and waits (bounded) for
the page's window.turndResult.

Then turns: with a certificate from ACME: Debian's pebble (ACME test CA) and its DNS server run
on loopback too, turnd gets a certificate for turnd.test through TLS-ALPN-01, pebble's issuing
root is trusted through an NSS database (Chromium's store on Linux, in a private HOME), and the
page must gather a relay candidate over turns:turnd.test and connect relay-only.
"""

import json
import os
import ssl
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


def run_page(transport, http=HTTP, flags=FLAGS, env=None, query="", expression="window.turndResult"):
    """Opens the page on `transport` (plus `query`) and waits for `expression` to be set."""
    profile = tempfile.mkdtemp(prefix="turnd-chromium-")
    url = f"http://{http}/?autorun&transport={transport}{query}"
    browser = subprocess.Popen(
        ["chromium", *flags, f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        def page_ws():
            targets = json.loads(get(f"http://127.0.0.1:{DEVTOOLS}/json"))
            return next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page" and http in t.get("url", "")), None)

        ws = websocket.create_connection(wait_for("the page target", page_ws, 20), timeout=5, suppress_origin=True)

        def result():
            ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate",
                                "params": {"expression": f"JSON.stringify({expression} || null)", "returnByValue": True}}))
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


def judge(transport, r):
    """(passed, line) for a page result."""
    pair = r.get("pair") or {}
    local, remote = pair.get("local", {}), pair.get("remote", {})
    ok = bool(r.get("pass") and local.get("candidateType") == "relay" and remote.get("candidateType") == "relay"
          and local.get("relayProtocol") == transport)
    if ok:
        return True, (f"ok   chromium over {transport}: relay({local.get('relayProtocol')}) <-> relay({remote.get('relayProtocol')}), "
                      f"round trips {r.get('rttMs')} ms")
    return False, f"FAIL chromium over {transport}: step={r.get('step')} cause={r.get('cause')} pair={pair} errors={r.get('errors')}"


ACME_HTTP = "127.0.0.1:8081"
DOMAIN = "turnd.test"


def acme_turns():
    """turns: through a certificate turnd got from pebble; True when Chromium passed."""
    work = tempfile.mkdtemp(prefix="turnd-acme-browser-")
    procs = []
    try:
        subprocess.run(["target/debug/turnd", "cert", "self-signed", "--host", "localhost", "--host", "127.0.0.1",
                        "--out", f"{work}/https"], check=True, stdout=subprocess.DEVNULL)
        config = {"pebble": {
            "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
            "certificate": f"{work}/https/cert.pem", "privateKey": f"{work}/https/key.pem",
            "httpPort": 8081, "tlsPort": 5349, "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        with open(f"{work}/pebble.json", "w") as f:
            json.dump(config, f)
        log = lambda name: open(f"{work}/{name}", "w")
        procs.append(subprocess.Popen(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", "127.0.0.1:8053",
             "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", "127.0.0.1:8055"],
            stdout=log("dns.log"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            ["pebble", "-config", f"{work}/pebble.json", "-dnsserver", "127.0.0.1:8053"],
            env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            stdout=log("pebble.log"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            ["target/debug/turnd", "serve", "--listen", "127.0.0.1:3479", "--relay-ip", "127.0.0.1",
             "--tls-listen", "127.0.0.1:5349", "--public-host", DOMAIN,
             "--http-listen", ACME_HTTP, "--metrics-listen", "off", "--secret", "browser-test-secret",
             "--acme-domain", DOMAIN, "--acme-directory", "https://127.0.0.1:14000/dir",
             "--acme-ca-root", f"{work}/https/ca.pem", "--acme-cache", f"{work}/cache"],
            stderr=log("turnd.log")))
        wait_for("an ACME certificate",
                 lambda: json.loads(get(f"http://{ACME_HTTP}/readyz"))["acme"]["certificate"], 60)
        https = ssl.create_default_context(cafile=f"{work}/https/ca.pem")
        root = urllib.request.urlopen("https://127.0.0.1:15000/roots/0", context=https, timeout=5).read()
        with open(f"{work}/root.pem", "wb") as f:
            f.write(root)
        # Chromium on Linux trusts the NSS database in $HOME/.pki/nssdb.
        home = f"{work}/home"
        os.makedirs(f"{home}/.pki/nssdb")
        subprocess.run(["certutil", "-d", f"sql:{home}/.pki/nssdb", "-N", "--empty-password"], check=True)
        subprocess.run(["certutil", "-d", f"sql:{home}/.pki/nssdb", "-A", "-t", "C,,", "-n", "pebble",
                        "-i", f"{work}/root.pem"], check=True)
        # turnd.test resolves to loopback in this browser only; every other name fails.
        flags = [f for f in FLAGS if not f.startswith("--host-resolver-rules")]
        flags.append(f"--host-resolver-rules=MAP {DOMAIN} 127.0.0.1 , MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
        try:
            r = run_page("tls", http=ACME_HTTP, flags=flags, env={**os.environ, "HOME": home})
        except TimeoutError as e:
            print(f"FAIL chromium over tls (ACME certificate): no result ({e})")
            return False
        ok, line = judge("tls", r)
        print(line + " (certificate from pebble by ACME, root trusted through NSS)")
        return ok
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


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
            ok, line = judge(transport, r)
            print(line)
            passed, failed = passed + ok, failed + (not ok)
    finally:
        turnd.terminate()
        turnd.wait(timeout=10)
    if acme_turns():
        passed += 1
    else:
        failed += 1
    print(f"browser: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
