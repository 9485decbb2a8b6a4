# A small HTTP/1.1 client over asyncio streams: keep-alive, TLS, a timeout on every await.
# Runs on MicroPython (asyncio + tls) and CPython (asyncio + ssl).

import asyncio

import netconn
from mpshim import ticks_diff, ticks_ms

MAX_HEADER_LINES = 64
MAX_BODY = 256 * 1024
STALE_MS = 1000   # a kept-alive connection that fails sooner than this was stale: retry once


class HttpError(Exception):
    pass


class TlsError(HttpError):
    """The TLS handshake failed: the server's certificate did not verify against the pinned
    CA (wrong CA, name or address not in its SAN, outside its validity dates), or the TLS
    protocol itself failed (e.g. the port speaks plain HTTP)."""


def tls_reason(exc):
    """One line saying why TLS failed, if exc comes from the TLS layer; else None."""
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeError):
        # MicroPython: Mbed TLS verification flags, one per line
        lines = [ln.strip(" !") for ln in str(exc).split("\n")]
        return "certificate verification failed: " + "; ".join(ln for ln in lines if ln)
    args = getattr(exc, "args", ())
    if isinstance(exc, OSError) and args and isinstance(args[0], int) and args[0] < 0:
        return "TLS error %s" % (args[1] if len(args) > 1 else args[0])  # MicroPython, Mbed TLS
    if "SSL" in type(exc).__name__:  # CPython ssl.SSLError family
        verify = getattr(exc, "verify_message", None)
        return "certificate verification failed: " + verify if verify else str(exc)
    return None


def tls_context(cafile):
    """A client TLS context that trusts only the pinned CA (PEM or DER file): the server's
    chain must end at it, and its cert must name the url's host (DNS name or IP literal)."""
    with open(cafile, "rb") as f:
        ca = f.read()
    der = _pem_to_der(ca) if b"-----BEGIN" in ca else ca
    try:
        import tls
    except ImportError:  # CPython
        import ssl

        # Not create_default_context(): that would also trust the system's CA store.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        ctx.load_verify_locations(cadata=der)
        return ctx
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    # Mbed TLS takes DER (PEM only NUL-terminated); tls' method takes no keywords.
    ctx.load_verify_locations(der)
    netconn.ROOM.start()    # a block kept for the TLS buffers (firmware/netconn.py)
    return ctx


def _pem_to_der(pem):
    """The first CERTIFICATE block of a PEM file as DER."""
    from binascii import a2b_base64

    begin = pem.find(b"-----BEGIN CERTIFICATE-----")
    end = pem.find(b"-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise ValueError("no certificate in the CA file")
    lines = pem[begin:end].split(b"\n")[1:]
    return a2b_base64(b"".join(ln.strip() for ln in lines))


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
    def __init__(self, url, ssl_context=None, timeout=10, proxy_url=""):
        self.secure, self.host, self.port, self.prefix = parse_url(url)
        self.proxy = None   # an HTTP CONNECT proxy (firmware/http_proxy.py), imported when used
        if proxy_url:
            from http_proxy import parse_proxy

            self.proxy = parse_proxy(proxy_url)
        if self.secure and ssl_context is None:
            raise ValueError("https url needs a CA to pin (tls_context(cafile))")
        self.ssl = ssl_context if self.secure else None
        self.timeout = timeout
        self.reader = None
        self.writer = None
        self.handshake_pending = False

    async def connect(self):
        """Open the connection now if none is open (a kept-alive one is reused). The meter
        connects before it builds a request: a TLS connection's buffers (Mbed TLS: a 16 KB
        record in, 4 KB out, one block each) then find room before a batch's pieces are
        spread over the heap (docs/performance.md, "Soaks under the cap")."""
        if self.writer is None:
            await self._connect()

    async def _connect(self):
        if self.proxy is not None:      # TLS, if any, runs inside the proxy's tunnel
            from http_proxy import open_connection

            conn = open_connection(self.proxy, self.host, self.port, self.ssl, self.timeout)
        else:
            # server_hostname is what the server cert must name: a DNS name (dNSName SAN)
            # or an IP literal (iPAddress SAN); see tools/lab/pki.py. TCP_NODELAY: the
            # request goes out in pieces.
            conn = netconn.open_connection(self.host, self.port, self.ssl, self.host)
        try:
            self.reader, self.writer = await asyncio.wait_for(conn, self.timeout)
        except Exception as exc:  # CPython does the handshake here
            self._check_tls(exc)
            raise
        # MicroPython's handshake runs on the first write; CPython's is done.
        self.handshake_pending = self.ssl is not None

    def _check_tls(self, exc):
        """Raise TlsError (and log it: the meter has no other trace of it) for a TLS failure."""
        reason = tls_reason(exc) if self.ssl is not None else None
        if reason is None:
            return
        self.close()
        msg = "TLS with %s:%d failed: %s" % (self.host, self.port, reason)
        try:
            import sys

            sys.stderr.write("httpc: %s\n" % msg)
        except Exception:
            pass
        raise TlsError(msg)

    def close(self):
        if self.writer is not None:
            netconn.close(self.writer)  # the socket too (MicroPython's Stream.close() does not)
        self.reader = self.writer = None

    async def request(self, method, path, body=b"", headers=None, timeout=None):
        """(status, headers, body). Reconnects once if a kept-alive connection went stale.
        timeout covers waiting for the response (long-polls need more than connecting).
        body: bytes, or a list of bytes-like pieces, written one after another."""
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                await self._connect()
            sent = ticks_ms()
            try:
                return await self._exchange(method, path, body, headers or {},
                                            timeout or self.timeout)
            except (OSError, EOFError, HttpError) as exc:
                self.close()
                # a stale kept-alive connection fails at once; one that held the request
                # for a while was cut mid-response, and the request may have been taken
                stale = ticks_diff(ticks_ms(), sent) < STALE_MS
                if fresh or attempt or isinstance(exc, HttpError) or not stale:
                    raise
            except asyncio.TimeoutError:
                self.close()
                raise

    async def _exchange(self, method, path, body, headers, timeout):
        pieces = body if isinstance(body, list) else [body]
        size = 0
        for p in pieces:
            size += len(p)
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (
            method, self.prefix, path, self.host, size)
        for k in headers:
            head += "%s: %s\r\n" % (k, headers[k])
        try:
            # the head with the first piece (one TLS record for a small request); the first
            # write may run the whole handshake
            self.writer.write(head.encode() + b"\r\n" + pieces[0])
            await asyncio.wait_for(self.writer.drain(), self.timeout)
            for i in range(1, len(pieces)):
                self.writer.write(pieces[i])
                await asyncio.wait_for(self.writer.drain(), self.timeout)
        except Exception as exc:
            if self.handshake_pending:
                self._check_tls(exc)
            raise
        self.handshake_pending = False
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
            try:
                resp_headers[name.strip().lower().decode()] = value.strip().decode()
            except UnicodeError:  # UnicodeDecodeError on CPython
                raise HttpError("bad header line: %r" % (h[:80],))
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
