# An HTTP CONNECT proxy for the meter's HTTP client (console key `proxy_url`, issue 12, 6):
# sites whose only way out is a web proxy. The meter opens a TCP connection to the proxy,
# asks it to CONNECT to the head-end's host and port (with Basic credentials when the URL
# carries user:password@), and on a 200 runs TLS to the head-end through the tunnel, so the
# proxy sees only the host name and encrypted bytes; the head-end's CA stays pinned. A plain
# http:// head-end is tunnelled the same way. Runs on MicroPython and CPython.

import asyncio
import sys
from binascii import b2a_base64

from httpc import HttpError, tls_reason
from mpshim import MICROPYTHON

MAX_HEADER_LINES = 32


class ProxyError(HttpError):
    pass


def _said(msg):
    # the meter has no other trace of why it cannot get out (as httpc's TLS failures)
    try:
        sys.stderr.write("httpc: %s\n" % msg)
    except Exception:
        pass
    return ProxyError(msg)


def parse_proxy(url):
    """(host, port, basic credentials or None) from http://[user:password@]host:port."""
    if not url.startswith("http://"):
        raise ValueError("proxy_url must be http://[user:password@]host:port")
    rest = url[7:].rstrip("/")
    cred, _, hostport = rest.rpartition("@")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in hostport:
        raise ValueError("proxy_url must be http://[user:password@]host:port")
    auth = b2a_base64(cred.encode()).strip().decode() if cred else None
    return host.strip("[]"), int(port), auth


def connect_request(host, port, auth):
    head = "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n" % (host, port, host, port)
    if auth:
        head += "Proxy-Authorization: Basic %s\r\n" % auth
    return (head + "\r\n").encode()


async def _tunnel(reader, writer, host, port, auth, timeout):
    writer.write(connect_request(host, port, auth))
    await asyncio.wait_for(writer.drain(), timeout)
    line = await asyncio.wait_for(reader.readline(), timeout)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise _said("proxy: bad answer to CONNECT: %r" % (line[:80],))
    for _ in range(MAX_HEADER_LINES):   # read to the blank line, and no further
        h = await asyncio.wait_for(reader.readline(), timeout)
        if h in (b"\r\n", b"\n"):
            break
        if not h:
            raise _said("proxy closed the connection in its answer to CONNECT")
    else:
        raise _said("proxy: too many header lines")
    if parts[1] != b"200":
        why = parts[2].strip().decode("latin-1") if len(parts) > 2 else ""
        raise _said("proxy refused CONNECT to %s:%d: %s %s" % (
            host, port, parts[1].decode("latin-1"), why))


async def open_connection(proxy, host, port, ssl, timeout):
    """(reader, writer) to host:port through the CONNECT proxy `proxy` (parse_proxy), TLS
    with `ssl` (the pinned context) inside the tunnel when it is not None."""
    phost, pport, auth = proxy
    try:
        return await _open(phost, pport, auth, host, port, ssl, timeout)
    except OSError as exc:      # the proxy itself is down or unreachable: say which
        if tls_reason(exc):     # CPython's TLS inside the tunnel: httpc reports it
            raise
        raise _said("proxy %s:%d unreachable: %s" % (phost, pport, exc))


async def _open(phost, pport, auth, host, port, ssl, timeout):
    if not MICROPYTHON:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(phost, pport), timeout)
        try:
            await _tunnel(reader, writer, host, port, auth, timeout)
            if ssl is not None:
                await asyncio.wait_for(writer.start_tls(ssl, server_hostname=host), timeout)
        except BaseException:
            writer.close()
            raise
        return reader, writer
    # MicroPython: the raw socket talks to the proxy, then TLS wraps that same socket.
    # Stream.readline reads a byte at a time, so nothing of the tunnel is read ahead.
    import socket
    from errno import EINPROGRESS

    ai = socket.getaddrinfo(phost, pport, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as exc:
        if exc.errno != EINPROGRESS:
            s.close()
            raise
    stream = asyncio.StreamReader(s)
    try:
        await _tunnel(stream, stream, host, port, auth, timeout)
    except BaseException:
        s.close()
        raise
    if ssl is not None:     # the handshake runs on the first write, as httpc expects
        s = ssl.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
        s.setblocking(False)
        stream = asyncio.StreamReader(s)
    return stream, stream
