"""A local HTTP receiver for the deliver tests and bench/deliver.sh.

Threaded (one thread per connection).  The first path segment picks what it
answers:
  /ok/...        200              /accept/...   202 (PagerDuty's answer)
  /e500/...      500              /e503/...     503
  /r429/...      429 with Retry-After (?after=SECONDS, or ?date=1 for an
                 HTTP-date that many seconds ahead)
  /e400/...      400
  /hang/...      no answer for ?s=SECONDS (default 30)
  /slow/...      200 after ?ms=MILLISECONDS
  /reset/...     the connection is reset (RST) without an answer
  /github/NAME/... and /jira/NAME/...   the issue tracker NAME a test
                 registered (trackers.py: GitHub's and Jira's REST APIs)
Every request is recorded (when it arrived, method, path, headers, body) as
it arrives, before any answer.

Run as a program (bench): prints "PORT" on stdout, then one line per request
on stderr is not printed; on SIGTERM it writes the arrivals, as
"monotonic_ns event_id" lines, to the file named by --record.
"""

import http.server
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from email.utils import formatdate

import trackers


class Request:
    def __init__(self, method, path, headers, body, at, mono_ns):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.at = at
        self.mono_ns = mono_ns
        self.done = False

    @property
    def route(self):
        return urllib.parse.urlsplit(self.path).path

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body are two writes: without this, Nagle's algorithm
        # and the client's delayed ACK hold the body back 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, self.path, list(self.headers.items()), body,
                      time.time(), time.monotonic_ns())
        self.server.record(req)
        parts = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(parts.query))
        mode = parts.path.strip("/").split("/")[0]
        if mode in ("github", "jira"):
            self.tracker(req, parts)
            return
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if mode == "hang":
            time.sleep(float(q.get("s", "30")))
            self.close_connection = True
            return
        if mode == "slow":
            time.sleep(float(q.get("ms", "1000")) / 1000)
        status = {"ok": 200, "slow": 200, "accept": 202, "e500": 500, "e503": 503,
                  "e400": 400, "r429": 429}.get(mode, 404)
        self.send_response(status)
        if mode == "r429":
            after = int(q.get("after", "60"))
            if q.get("date"):
                self.send_header("Retry-After", formatdate(time.time() + after, usegmt=True))
            else:
                self.send_header("Retry-After", str(after))
        payload = b'{"ok":true}' if status < 300 else b"no thanks"
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            pass
        req.done = True

    do_PUT = do_POST
    do_PATCH = do_POST
    do_GET = do_POST

    def tracker(self, req, parts):
        segs = parts.path.split("/", 3)          # '', kind, name, rest
        t = self.server.trackers.get((segs[1], segs[2] if len(segs) > 2 else ""))
        if t is None:
            a = trackers.Answer(404, {"message": "Not Found"})
        else:
            a = t.handle(req.method, "/" + (segs[3] if len(segs) > 3 else ""),
                         trackers.parse_query(parts.query), req.headers, req.body)
        if a.hang:
            time.sleep(a.hang)
        try:
            self.send_response(a.status)
            for k, v in a.headers.items():
                self.send_header(k, str(v))
            if a.status != 204:
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(a.body)))
            self.end_headers()
            if a.status != 204:
                self.wfile.write(a.body)
        except OSError:
            pass
        req.done = True


class Receiver(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host="127.0.0.1", port=0):
        super().__init__((host, port), Handler)
        self.lock = threading.Lock()
        self.requests = []
        self.trackers = {}
        self.thread = None

    def record(self, req):
        with self.lock:
            self.requests.append(req)

    def start(self):
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()

    @property
    def port(self):
        return self.server_address[1]

    def tracker(self, kind, name, secret, **kw):
        """A GitHub or Jira stand-in at /KIND/NAME/; its destination's url."""
        base = "http://127.0.0.1:%d/%s/%s" % (self.port, kind, name)
        if kind == "github":
            t = trackers.GitHub(name, secret, **kw)
            url = base + "/repos/%s/%s" % (t.owner, t.repo)
        else:
            t = trackers.Jira(name, secret, base=base, **kw)
            url = base + "/rest/api/2/project/" + t.project
        self.trackers[(kind, name)] = t
        return t, url

    def url(self, mode, name, query=""):
        return "http://127.0.0.1:%d/%s/%s%s" % (self.port, mode, name, ("?" + query) if query else "")

    def received(self, name=None):
        with self.lock:
            reqs = list(self.requests)
        if name is None:
            return reqs
        return [r for r in reqs if r.route.rstrip("/").split("/")[-1] == name]


if __name__ == "__main__":
    import argparse
    import json
    import signal
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--record", required=True)
    args = ap.parse_args()
    rcv = Receiver()
    print(rcv.port, flush=True)

    def stop(*_):
        threading.Thread(target=rcv.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rcv.serve_forever()
    with open(args.record, "w") as f:
        for r in rcv.requests:
            try:
                eid = json.loads(r.body)["event"]["id"]
            except Exception:
                eid = r.header("Gate-Bridge-Event-Id")
            f.write("%d %d %s\n" % (r.mono_ns, int(r.at * 1e6), eid))
    sys.exit(0)
