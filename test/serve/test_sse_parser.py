"""The test's own SSE parser and chunked decoder (test/serve/sse.py): what
the other tests rely on to read the stream."""

from sse import HTTPBody, SSEParser


def frames(chunks):
    p = SSEParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def test_lf_crlf_cr_and_fields():
    text = (b"retry: 2000\n\n"
            b"event: status\ndata: {\"database\":\"up\",\"position\":7}\n\n"
            b": keep-alive\n\n"
            b"id: 8\r\nevent: created\r\ndata: {\"a\":1}\r\n\r\n"
            b"id: 9\revent: acked\rdata:x\rdata: y\r\r\n")
    for split in (len(text), 1, 3, 7):
        chunks = [text[i:i + split] for i in range(0, len(text), split)]
        f = frames(chunks)
        kinds = [(x.kind, x.id, x.event, x.data, x.value) for x in f]
        assert kinds == [
            ("retry", None, None, None, "2000"),
            ("event", None, "status", '{"database":"up","position":7}', None),
            ("comment", None, None, None, "keep-alive"),
            ("event", "8", "created", '{"a":1}', None),
            ("event", "9", "acked", "x\ny", None),
        ], (split, kinds)


def test_a_frame_without_data_is_not_dispatched_and_incomplete_frames_wait():
    p = SSEParser()
    assert p.feed(b"id: 5\n\n") == []
    assert p.feed(b"id: 6\nevent: created\ndata: {}") == []
    assert p.feed(b"\n") == []
    f = p.feed(b"\n")
    assert len(f) == 1 and f[0].id == "6"


def test_chunked_decoding_across_any_split():
    body = b"id: 1\ndata: {}\n\n" * 3
    wire = b""
    for part in (body[:5], body[5:30], body[30:]):
        wire += b"%x\r\n" % len(part) + part + b"\r\n"
    wire += b"0\r\n\r\n"
    for split in (1, 2, 5, len(wire)):
        d = HTTPBody(True)
        out = b"".join(d.feed(wire[i:i + split]) for i in range(0, len(wire), split))
        assert out == body and d.done, split
    assert HTTPBody(False).feed(b"abc") == b"abc"
