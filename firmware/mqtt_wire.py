# The wire under firmware/mqtt_comms.py: what umqtt.simple sees as its socket (Link, a pair
# of in-memory buffers), MQTT packet framing on it, and the real TCP (TLS) connection the
# asyncio tasks move its bytes over. See mqtt_comms.py for why umqtt never touches the network.
#
# - reads are served only from the complete packet being parsed; a read past it raises
#   WouldBlock, which is how umqtt's publish()/subscribe() are stopped before they wait for
#   their ack.
# - umqtt writes a packet as 3 to 6 small writes, which with Nagle and delayed ACKs can stall
#   ~40 ms. The link collects them and the session sends everything pending in one write (one
#   TCP segment); netconn sets TCP_NODELAY too.
# - the connection itself (TLS, TCP_NODELAY): firmware/netconn.py.

import asyncio
import sys

from mpshim import alias_u_modules, print_exception

alias_u_modules()  # umqtt.simple imports usocket, ustruct, ubinascii
from umqtt import simple  # noqa: E402

MAX_PACKET = 32 * 1024  # larger packets from the broker are refused (see _Link._refuse)


class LinkError(Exception):
    """The link to the broker is unusable: reconnect."""


EXPECTED_ERRORS = (LinkError, OSError, EOFError, AssertionError, asyncio.TimeoutError,
             simple.MQTTException)


class WouldBlock(Exception):
    """umqtt asked for bytes that have not arrived (it is waiting for an ack)."""


class Link:
    """What umqtt.simple sees as its socket: writes collect in tx; reads come from rx, and
    only from the complete packet being parsed (pos..end)."""

    def __init__(self):
        self.rx = bytearray()
        self.pos = 0
        self.end = 0
        self.tx = bytearray()
        self.writes = 0  # writes umqtt made (a packet takes several)
        self.skip = 0     # bytes still to come of a refused packet: dropped as they arrive
        self.refused = []  # (QoS, packet id, size) of PUBLISH packets refused as too large

    def read(self, n):
        if self.pos + n > self.end:
            raise WouldBlock()
        data = bytes(self.rx[self.pos:self.pos + n])
        self.pos += n
        return data

    def write(self, buf, n=None):
        if isinstance(buf, str):
            buf = buf.encode()
        if n is not None:
            buf = buf[:n]
        self.tx += buf
        self.writes += 1
        return len(buf)

    def setblocking(self, flag):
        pass

    def settimeout(self, seconds):
        pass

    def connect(self, addr):
        pass

    def close(self):
        pass

    # --- for MqttComms ---
    def feed(self, data):
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
        if data:
            self.rx += data

    def take(self):
        """The pending output, leaving a fresh buffer (the old one goes to the stream)."""
        out = self.tx
        self.tx = bytearray()
        return out

    def packet_size(self):
        """Length of the complete packet at pos, or 0 while some of it has not arrived."""
        rx = self.rx
        i = self.pos + 1
        n = shift = 0
        while True:
            if i >= len(rx):
                return 0
            b = rx[i]
            i += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise LinkError("MQTT protocol error: bad remaining length")
        if n > MAX_PACKET:
            return self._refuse(i, n)
        size = i - self.pos + n
        return size if self.pos + size <= len(rx) else 0

    def _refuse(self, i, n):
        """A packet over MAX_PACKET at pos (its body starts at i). A PUBLISH is dropped, never
        held in memory: what has arrived now, the rest as it arrives (feed); its QoS and
        packet id go to `refused`, so the session acknowledges it and the broker does not
        deliver it again with every reconnect (a wedged meter). Any other packet: LinkError."""
        rx = self.rx
        if rx[self.pos] & 0xF0 != 0x30:
            raise LinkError("MQTT packet of %d bytes refused" % n)
        qos = (rx[self.pos] >> 1) & 3
        if len(rx) < i + 2:
            return 0
        need = 2 + (rx[i] << 8 | rx[i + 1]) + (2 if qos else 0)  # topic, packet id
        if len(rx) < i + need:
            return 0
        pid = rx[i + need - 2] << 8 | rx[i + need - 1] if qos else 0
        self.refused.append((qos, pid, n))
        size = i - self.pos + n
        have = len(rx) - self.pos
        if have >= size:
            self.rx = rx[:self.pos] + rx[self.pos + size:]
        else:
            self.rx = rx[:self.pos]
            self.skip = size - have
        return self.packet_size()

    def compact(self):
        self.end = self.pos
        if self.pos:
            self.rx = self.rx[self.pos:]
            self.pos = self.end = 0


class Net:
    """Stands in for umqtt's socket module while its connect() runs: the new 'socket' is
    the link (the real connection is already open), and no name is looked up."""

    def __init__(self, link):
        self.link = link

    def socket(self, *args):
        return self.link

    def getaddrinfo(self, host, port, *args):
        return [(None, None, None, "", (host, port))]


def refused_by(rx, start, end):
    """Whether a SUBACK's return codes hold 0x80 (failure)."""
    for i in range(start, end):
        if rx[i] == 0x80:
            return True
    return False


def traceback_text(exc):
    print_exception(exc, sys.stderr)


def log(msg):
    try:
        sys.stderr.write("mqtt: %s\n" % msg)
    except Exception:
        pass
