"""Runs last: no server's stderr (every log of this session) holds a token."""

import glob
import os

from conftest import ALL_TOKENS, LOGDIR, SECRET_STRINGS, Serve, tokens_text


def test_tokens_never_logged():
    # one more server, used with good and bad tokens in every place a token goes
    s = Serve(name="logcheck", tokens=tokens_text())
    try:
        for t in ALL_TOKENS:
            s.get("/api/counts", token=t)
            s.get("/events", params={"token": t}, stream=True, timeout=5).close()
            s.get("/nothing?token=" + t, token=t)
            s.post("/api/incidents/1/ack", {"actor": "x"}, token=t)
    finally:
        s.stop()
    logs = sorted(glob.glob(os.path.join(LOGDIR, "*.log")))
    assert logs, "no server log in %s" % LOGDIR
    leaks = []
    for path in logs:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for secret in SECRET_STRINGS:
            if secret in text:
                leaks.append("%s holds %s..." % (os.path.basename(path), secret[:6]))
            # nor its first half (a token cut short in a message)
            elif secret[:len(secret) // 2 + 4] in text:
                leaks.append("%s holds the start of %s..." % (os.path.basename(path), secret[:6]))
    assert not leaks, leaks
