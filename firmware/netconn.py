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
# - room for TLS: Mbed TLS takes its record buffers (16 KB in, 4 KB out, one block each) from
#   the GC heap on the unix and rp2 ports. After hours of metering the heap is cut into small
#   holes and a reconnect's buffers may find no block that large, though the heap has room
#   in all (the HTTPS soak's MemoryError before the handshake, docs/performance.md). So a
#   block is held for them from start-up (TlsRoom), let go just before wrap_socket, and taken
#   back when the connection closes, where its buffers were.

import asyncio
import sys

from mpshim import MICROPYTHON

# Mbed TLS's record buffers with their headers (MBEDTLS_SSL_IN/OUT_BUFFER_LEN: 16384 and
# 4096 bytes of content plus up to about 350 each) and the TLS socket object beside them.
TLS_ROOM = 22 * 1024


class TlsRoom:
    """One block of TLS_ROOM bytes held while no TLS connection needs it, once the meter has
    made a TLS context (start()). Nothing on CPython, nor on an ESP32, whose Mbed TLS
    allocates outside the GC heap."""

    def __init__(self, size=TLS_ROOM):
        self.size = size
        self.block = None
        self.wanted = False

    def start(self):
        """The meter speaks TLS (httpc.tls_context): hold the block from now on."""
        self.wanted = MICROPYTHON and sys.platform != "esp32"
        self.hold()

    def hold(self):
        """Take the block if it is not held (start-up; a TLS connection closed)."""
        if self.wanted and self.block is None:
            try:
                self.block = bytearray(self.size)
            except MemoryError:     # not now: the next close tries again
                pass

    def release(self):
        """Let the block go: the TLS buffers about to be made take its place."""
        self.block = None


ROOM = TlsRoom()


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
        ROOM.release()
        try:
            s = ssl.wrap_socket(s, server_hostname=name, do_handshake_on_connect=False)
        except BaseException:
            s.close()
            ROOM.hold()
            raise
        s.setblocking(False)
    stream = asyncio.StreamReader(s)  # MicroPython: one Stream both ways; the first
    return stream, stream             # write waits for the connect (and the handshake)


def close(writer):
    """Close a writer from open_connection; never raises. A TLS connection's buffers are
    freed here, and the block for the next one is taken back where they were."""
    if writer is None:
        return
    try:
        writer.close()
        s = getattr(writer, "s", None)  # MicroPython's Stream.close() leaves the socket
        if s is not None:
            s.close()
    except OSError:
        pass
    ROOM.hold()
