# A small HTTP/1.1 client over asyncio streams: keep-alive, TLS, a timeout on every await.
# Runs on MicroPython (asyncio + tls) and CPython (asyncio + ssl).

import asyncio

MAX_HEADER_LINES = 64
MAX_BODY = 256 * 1024


class HttpError(Exception):
    pass


def tls_context(cafile):
    """A client TLS context that verifies the server against the pinned CA (PEM or DER file)."""
    with open(cafile, "rb") as f:
        ca = f.read()
    try:
        import tls

        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_REQUIRED
        if ca.startswith(b"-----"):
            ca = _pem_to_der(ca)
        ctx.load_verify_locations(cadata=ca)
        return ctx
    except ImportError:  # CPython
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cafile=cafile)
        return ctx


def _pem_to_der(pem):
    from binascii import a2b_base64

    lines = [ln for ln in pem.split(b"\n") if ln and not ln.startswith(b"-----")]
    return a2b_base64(b"".join(lines))


def parse_url(url):
    """(tls, host, port, path prefix) from http[s]://host[:port][/prefix]."""
    if url.startswith("https://"):
        secure, rest = True, url[8:]
    elif url.startswith("http://"):
        secure, rest = False, url[7:]
    else:
        raise ValueError("server url must start with http:// or https://: %r" % (url,))
    slash = rest.find("/")
    hostport, prefix = (rest, "") if slash < 0 else (rest[:slash], rest[slash:].rstrip("/"))
    host, _, port = hostport.partition(":")
    if not host:
        raise ValueError("server url has no host: %r" % (url,))
    return secure, host, int(port) if port else (443 if secure else 80), prefix


class HttpClient:
    def __init__(self, url, ssl_context=None, timeout=10):
        self.secure, self.host, self.port, self.prefix = parse_url(url)
        if self.secure and ssl_context is None:
            raise ValueError("https url needs a CA to pin (tls_context(cafile))")
        self.ssl = ssl_context if self.secure else None
        self.timeout = timeout
        self.reader = None
        self.writer = None

    async def _connect(self):
        if self.ssl is not None:
            conn = asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                           server_hostname=self.host)
        else:
            conn = asyncio.open_connection(self.host, self.port)
        self.reader, self.writer = await asyncio.wait_for(conn, self.timeout)

    def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", headers=None, timeout=None):
        """(status, headers, body). Reconnects once if a kept-alive connection went stale.
        timeout covers waiting for the response (long-polls need more than connecting)."""
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                await self._connect()
            try:
                return await self._exchange(method, path, body, headers or {},
                                            timeout or self.timeout)
            except (OSError, EOFError, HttpError) as exc:
                self.close()
                if fresh or attempt or isinstance(exc, HttpError):
                    raise
            except asyncio.TimeoutError:
                self.close()
                raise

    async def _exchange(self, method, path, body, headers, timeout):
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (
            method, self.prefix, path, self.host, len(body))
        for k in headers:
            head += "%s: %s\r\n" % (k, headers[k])
        self.writer.write(head.encode() + b"\r\n" + body)
        await asyncio.wait_for(self.writer.drain(), self.timeout)
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("connection closed by server")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError("bad status line: %r" % (line[:80],))
        try:
            status = int(parts[1])
        except ValueError:
            raise HttpError("bad status code: %r" % (line[:80],))
        resp_headers = {}
        for _ in range(MAX_HEADER_LINES):
            h = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise EOFError("connection closed in headers")
            name, sep, value = h.partition(b":")
            if not sep:
                raise HttpError("bad header line: %r" % (h[:80],))
            resp_headers[name.strip().lower().decode()] = value.strip().decode()
        else:
            raise HttpError("too many header lines")
        size = resp_headers.get("content-length")
        if size is None:
            raise HttpError("response has no Content-Length")
        try:
            size = int(size)
        except ValueError:
            raise HttpError("bad Content-Length: %r" % (size,))
        if not 0 <= size <= MAX_BODY:
            raise HttpError("response body of %d bytes refused" % size)
        data = await asyncio.wait_for(self.reader.readexactly(size), self.timeout) if size else b""
        if resp_headers.get("connection", "").lower() == "close":
            self.close()
        return status, resp_headers, data
