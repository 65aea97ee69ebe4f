#!/usr/bin/env python3
"""A tiny logging HTTP/1.1 proxy for the client tests.

    python3 logproxy.py --listen-port 0 --upstream 127.0.0.1:PORT --log FILE [--bodies]

Relays bytes between a client and griddav unchanged (keep-alive, chunked
bodies, `Expect: 100-continue` all pass through as sent) and writes one line
per exchange to FILE:

    <seq> <METHOD> <path> -> <status> <reason> | req: Header=value ... | resp: Header=value ...

with the headers that matter to WebDAV clients (If, If-Match, Lock-Token,
Depth, Destination, Overwrite, Timeout, Content-Length, Transfer-Encoding,
ETag, ...). With --bodies, the request and response bodies of the methods
that carry XML (PROPFIND, PROPPATCH, LOCK, ...) are logged too, up to 8 KiB
each. Prints `logproxy listening on PORT` on stdout when ready.

It parses HTTP framing only to find where each message ends: the bytes it
forwards are exactly those it received.
"""
import argparse
import collections
import socket
import sys
import threading

INTERESTING = {
    "if", "if-match", "if-none-match", "lock-token", "depth", "destination",
    "overwrite", "timeout", "content-length", "transfer-encoding", "expect",
    "content-range", "range", "etag", "last-modified", "dav", "allow",
    "content-type", "location", "user-agent", "x-oc-mtime",
}
XML_METHODS = {"PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "MKCOL", "REPORT", "OPTIONS"}
BODY_LIMIT = 8192


class Reader:
    """Buffered reads from a socket that also forward what they consume."""

    def __init__(self, sock, out):
        self.sock, self.out, self.buf = sock, out, b""

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError
        self.buf += data

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ValueError("header block over 1 MiB")
            self._fill()
        i = self.buf.index(b"\r\n\r\n") + 4
        raw, self.buf = self.buf[:i], self.buf[i:]
        self.out.sendall(raw)
        lines = raw.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.append((k.strip().lower(), v.strip()))
        return lines[0], headers

    def exact(self, n, keep):
        """Forward n bytes; return up to BODY_LIMIT of them if keep."""
        kept = b""
        while n > 0:
            if not self.buf:
                self._fill()
            chunk, self.buf = self.buf[:n], self.buf[n:]
            self.out.sendall(chunk)
            n -= len(chunk)
            if keep and len(kept) < BODY_LIMIT:
                kept += chunk[:BODY_LIMIT - len(kept)]
        return kept

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        raw, self.buf = self.buf[:i], self.buf[i:]
        self.out.sendall(raw)
        return raw

    def chunked(self, keep):
        kept = b""
        while True:
            size = int(self.line().split(b";")[0].strip(), 16)
            if size == 0:
                while self.line() != b"\r\n":  # trailers
                    pass
                return kept
            part = self.exact(size, keep)
            if keep and len(kept) < BODY_LIMIT:
                kept += part[:BODY_LIMIT - len(kept)]
            self.exact(2, False)

    def until_eof(self, keep):
        kept = b""
        try:
            while True:
                if not self.buf:
                    self._fill()
                chunk, self.buf = self.buf, b""
                self.out.sendall(chunk)
                if keep and len(kept) < BODY_LIMIT:
                    kept += chunk[:BODY_LIMIT - len(kept)]
        except EOFError:
            return kept


def body(reader, headers, keep):
    h = dict(headers)
    if "chunked" in h.get("transfer-encoding", "").lower():
        return reader.chunked(keep)
    if "content-length" in h:
        return reader.exact(int(h["content-length"]), keep)
    return None  # no framing: request has no body; response runs to EOF


def fmt(headers):
    return " ".join(f"{k}={v!r}" for k, v in headers if k in INTERESTING)


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()
        self.seq = 0

    def next(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def write(self, text):
        with self.lock:
            self.f.write(text + "\n")


def serve_connection(client, upstream_addr, log, bodies):
    try:
        upstream = socket.create_connection(upstream_addr)
    except OSError as e:
        log.write(f"! cannot reach upstream: {e}")
        client.close()
        return
    pending = collections.deque()
    cond = threading.Condition()
    done = threading.Event()

    def requests():
        r = Reader(client, upstream)
        try:
            while True:
                line, headers = r.head()
                method = line.split(" ", 1)[0].upper()
                item = {"seq": log.next(), "line": line, "method": method,
                        "req": fmt(headers), "reqbody": None}
                with cond:
                    pending.append(item)
                    cond.notify()
                keep = bodies and method in XML_METHODS
                b = body(r, headers, keep)
                if keep and b:
                    item["reqbody"] = b.decode("utf-8", "replace")
        except (EOFError, OSError, ValueError):
            pass
        finally:
            done.set()
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with cond:
                cond.notify()

    def responses():
        r = Reader(upstream, client)
        try:
            while True:
                status_line, headers = r.head()
                parts = status_line.split(" ", 2)
                status = int(parts[1])
                with cond:
                    while not pending and not done.is_set():
                        cond.wait()
                    item = pending[0] if pending else None
                method = item["method"] if item else "?"
                if 100 <= status < 200:
                    if item:
                        log.write(f"{item['seq']} {item['line']} -> interim {status_line}")
                    continue
                with cond:
                    if pending:
                        pending.popleft()
                keep = bodies and method in XML_METHODS
                b = None
                if method == "HEAD" or status in (204, 304):
                    b = None
                else:
                    b = body(r, headers, keep)
                    if b is None:
                        b = r.until_eof(keep)
                if item:
                    text = (f"{item['seq']} {item['line'].rsplit(' ', 1)[0]} -> "
                            f"{' '.join(parts[1:])} | req: {item['req']} | resp: {fmt(headers)}")
                    if item["reqbody"]:
                        text += "\n    >>> " + item["reqbody"].replace("\n", "\n    >>> ")
                    if keep and b:
                        text += "\n    <<< " + b.decode("utf-8", "replace").replace("\n", "\n    <<< ")
                    log.write(text)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    t = threading.Thread(target=requests, daemon=True)
    t.start()
    responses()
    t.join(timeout=5)
    client.close()
    upstream.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--upstream", required=True, help="HOST:PORT of griddav")
    p.add_argument("--log", required=True)
    p.add_argument("--bodies", action="store_true")
    a = p.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    log = Log(a.log)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.listen_port))
    srv.listen(64)
    print(f"logproxy listening on {srv.getsockname()[1]}", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve_connection, args=(c, (host, int(port)), log, a.bodies),
                         daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
