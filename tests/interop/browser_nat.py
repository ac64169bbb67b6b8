"""One case of browser_nat.sh, run inside the client namespace: Chromium opens turnd's page
(behind the namespace's NAT) and the page's "your network" result must give the expected
verdict. Usage: browser_nat.py HTTP_ADDR API_KEY EXPECTED_VERDICT."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser  # noqa: E402

http, key, expected = sys.argv[1:4]
# Not the loopback-only resolver rule of browser.py: this page is on the server namespace's IP.
flags = [f for f in browser.FLAGS if not f.startswith("--host-resolver-rules")]
flags.append("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE 10.99.2.1 , EXCLUDE 10.99.2.2")
r = browser.run_page("tcp", http=http, flags=flags, query=f"&key={key}", expression="window.turndNetwork")
print(f"browser ({expected}): {json.dumps(r)}")
if r.get("verdict") != expected:
    sys.exit(f"FAIL: the page said {r.get('verdict')!r}, expected {expected!r}")
