"""Server-Sent Events over plain sockets, for the tests of gate-bridge serve.

SSEParser turns bytes into frames (the text/event-stream rules: lines end in
LF, CRLF or CR; "field: value" with one optional space after the colon;
lines starting with ':' are comments; a blank line ends a frame; a frame
without data is not dispatched, but "retry" is reported on its own).
HTTPBody undoes chunked transfer coding.  SSEClient is a blocking client
on one socket; AsyncSSEClient the same for asyncio, for many clients in one
process.
"""

import asyncio
import json
import socket
import time


class Frame:
    """One dispatched item: kind is 'event', 'comment' or 'retry'."""

    __slots__ = ("kind", "id", "event", "data", "value", "t")

    def __init__(self, kind, id=None, event=None, data=None, value=None):
        self.kind = kind
        self.id = id
        self.event = event
        self.data = data
        self.value = value
        self.t = time.time()

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        if self.kind == "event":
            return "Frame(id=%r, event=%r, data=%r)" % (self.id, self.event, self.data)
        return "Frame(%s %r)" % (self.kind, self.value)


class SSEParser:
    def __init__(self):
        self.buf = b""
        self.pending_cr = False
        self._reset()
        self.last_event_id = None

    def _reset(self):
        self.f_id = None
        self.f_event = None
        self.f_data = []
        self.f_has_data = False

    def feed(self, data):
        """Returns the frames completed by DATA."""
        out = []
        self.buf += data
        while True:
            # find the end of a line: LF, CRLF or CR
            i_lf = self.buf.find(b"\n")
            i_cr = self.buf.find(b"\r")
            if i_lf < 0 and i_cr < 0:
                break
            if i_cr >= 0 and (i_lf < 0 or i_cr < i_lf):
                if i_cr + 1 == len(self.buf):
                    break  # a CR at the end: wait for a possible LF
                line = self.buf[:i_cr]
                skip = 2 if self.buf[i_cr + 1:i_cr + 2] == b"\n" else 1
                self.buf = self.buf[i_cr + skip:]
            else:
                line = self.buf[:i_lf]
                self.buf = self.buf[i_lf + 1:]
            self._line(line.decode("utf-8"), out)
        return out

    def _line(self, line, out):
        if line == "":
            if self.f_has_data:
                out.append(Frame("event", id=self.f_id, event=self.f_event or "message",
                                 data="\n".join(self.f_data)))
            self._reset()
            return
        if line.startswith(":"):
            out.append(Frame("comment", value=line[1:].lstrip(" ")))
            return
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "id":
            self.f_id = value
            self.last_event_id = value
        elif field == "event":
            self.f_event = value
        elif field == "data":
            self.f_data.append(value)
            self.f_has_data = True
        elif field == "retry":
            out.append(Frame("retry", value=value))
        # other fields are ignored, as browsers do


class HTTPBody:
    """Decodes a response body, chunked or not, incrementally."""

    def __init__(self, chunked):
        self.chunked = chunked
        self.buf = b""
        self.need = None  # bytes left in the current chunk
        self.done = False

    def feed(self, data):
        if not self.chunked:
            return data
        self.buf += data
        out = []
        while not self.done:
            if self.need is None:
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                size = int(self.buf[:i].split(b";")[0].strip() or b"0", 16)
                self.buf = self.buf[i + 2:]
                if size == 0:
                    self.done = True
                    break
                self.need = size
            if self.need > 0:
                take = self.buf[:self.need]
                out.append(take)
                self.buf = self.buf[len(take):]
                self.need -= len(take)
            if self.need == 0:
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]  # CRLF after the chunk
                self.need = None
            else:
                break
        return b"".join(out)


def build_request(host, port, path, headers=None):
    lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port),
             "Accept: text/event-stream", "Cache-Control: no-cache"]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def parse_head(raw):
    """(status, {lower-case name: value}) of a response head."""
    text = raw.decode("iso-8859-1")
    first, *rest = text.split("\r\n")
    status = int(first.split()[1])
    hdrs = {}
    for line in rest:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


class SSEClient:
    """A blocking SSE client.  Frames accumulate in .frames."""

    def __init__(self, host, port, path="/events", headers=None, timeout=10, rcvbuf=None):
        self.host, self.port, self.path = host, port, path
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.sendall(build_request(host, port, path, headers))
        self.frames = []
        self.parser = SSEParser()
        self.closed = False
        self.status = None
        self.headers = {}
        self.body = b""  # the body of a response that is not a stream
        raw = b""
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in raw:
            if time.time() > deadline:
                raise TimeoutError("no response head from %s" % path)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a response head: %r" % raw)
            raw += chunk
        head, rest = raw.split(b"\r\n\r\n", 1)
        self.status, self.headers = parse_head(head)
        self.decoder = HTTPBody(self.headers.get("transfer-encoding", "").lower() == "chunked")
        self._consume(rest)

    def _consume(self, data):
        body = self.decoder.feed(data)
        if self.status != 200:
            self.body += body
            return
        self.frames.extend(self.parser.feed(body))

    def poll(self, timeout):
        """Reads what arrives within TIMEOUT seconds (at least one recv)."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(262144)
        except (socket.timeout, BlockingIOError):
            return True
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        self._consume(data)
        return True

    def events(self, kind=None):
        return [f for f in self.frames
                if f.kind == "event" and (kind is None or f.event == kind)]

    def data_events(self):
        """Events with an id (every frame but status frames)."""
        return [f for f in self.frames if f.kind == "event" and f.id is not None]

    def wait_for(self, pred, timeout, what="a condition"):
        deadline = time.time() + timeout
        while True:
            if pred(self):
                return
            if self.closed:
                raise AssertionError("stream closed while waiting for %s; frames: %r"
                                     % (what, self.frames[-10:]))
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("timed out after %ss waiting for %s; last frames: %r"
                                     % (timeout, what, self.frames[-10:]))
            self.poll(min(left, 0.5))

    def positions(self):
        return [int(f.id) for f in self.data_events()]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


class AsyncSSEClient:
    """An asyncio SSE client: run() reads until stop() or the stream ends.
    Records (position, receipt time) of every event with an id."""

    def __init__(self, host, port, path="/events", headers=None):
        self.host, self.port, self.path, self.headers = host, port, path, headers or {}
        self.parser = SSEParser()
        self.received = []  # (position, time.time())
        self.status_frames = []
        self.other = []
        self.ready = asyncio.Event()  # set at the first status frame
        self.closed = False
        self.error = None
        self.status = None
        self.writer = None

    async def run(self):
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
            self.writer = writer
            writer.write(build_request(self.host, self.port, self.path, self.headers))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            self.status, hdrs = parse_head(head[:-4])
            dec = HTTPBody(hdrs.get("transfer-encoding", "").lower() == "chunked")
            if self.status != 200:
                self.error = "HTTP %s" % self.status
                return
            while True:
                data = await reader.read(262144)
                if not data:
                    break
                now = time.time()
                for f in self.parser.feed(dec.feed(data)):
                    if f.kind != "event":
                        self.other.append(f)
                    elif f.id is None:
                        self.status_frames.append(f)
                        self.ready.set()
                    else:
                        self.received.append((int(f.id), now))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - recorded for the test to report
            self.error = repr(e)
        finally:
            self.closed = True
            self.ready.set()
            if self.writer is not None:
                self.writer.close()

    def positions(self):
        return [p for p, _ in self.received]
