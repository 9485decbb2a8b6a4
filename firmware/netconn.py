# A TCP (or Direct TLS) connection as asyncio streams, for every transport that keeps a
# connection of its own (MQTT, XMPP, and mail): one place that knows how MicroPython and
# CPython differ in opening one and in closing one.
#
# - TCP_NODELAY: a transport writes small messages and waits for their answers; Nagle and
#   delayed ACKs would stall each ~40 ms. CPython's asyncio sets it itself; MicroPython's
#   socket module may lack the constants (IPPROTO_TCP 6, TCP_NODELAY 1).
# - TLS from the first byte (the pinned-CA context of httpc.tls_context), handshaking
#   without blocking: MicroPython's asyncio cannot switch a connection to TLS midway, so
#   there is no STARTTLS here (XMPP: XEP-0368 Direct TLS; mail: IMAPS and SMTPS).
# - server_hostname: the name the certificate must carry (default: the host connected to).

import asyncio

from mpshim import MICROPYTHON


async def open_connection(host, port, ssl, server_hostname=None):
    """(reader, writer) for a TCP (TLS if ssl) connection with TCP_NODELAY. Not bounded in
    time here: the caller wraps it in asyncio.wait_for."""
    name = server_hostname or host
    if not MICROPYTHON:
        return await asyncio.open_connection(host, port, ssl=ssl,
                                             server_hostname=name if ssl else None)
    import socket
    from errno import EINPROGRESS

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
    except (OSError, AttributeError):
        pass
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as exc:
        if exc.errno != EINPROGRESS:
            s.close()
            raise
    if ssl is not None:
        s = ssl.wrap_socket(s, server_hostname=name, do_handshake_on_connect=False)
        s.setblocking(False)
    stream = asyncio.StreamReader(s)  # MicroPython: one Stream both ways; the first
    return stream, stream             # write waits for the connect (and the handshake)


def close(writer):
    """Close a writer from open_connection; never raises."""
    if writer is None:
        return
    try:
        writer.close()
        s = getattr(writer, "s", None)  # MicroPython's Stream.close() leaves the socket
        if s is not None:
            s.close()
    except OSError:
        pass
