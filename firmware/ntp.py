# Board time from NTP (SNTPv4, RFC 4330) when the console sets `ntp_host` (issue 12, 6).
#
# After a power cut an ESP32 or a Pico W starts its clock in 2000: with `ntp_host` the board's
# RTC is set from NTP at start and every PERIOD_S, so the very first exchange is in the
# head-end's replay window. NTP is unauthenticated, so it never overrules the head-end: once a
# signed answer has set the clock (Clock.synced), an NTP step moves the RTC but not the
# meter's wall time (the offset takes the step back). The signed head-end time still governs
# the replay window, and a spoofed NTP answer can at most delay the first exchange by one
# signed time refusal.
#
# Checks on an answer: 48 bytes or more, mode 4 (server), stratum 1..15 (0 is a
# kiss-of-death), version 1..4, the originate timestamp equal to the random transmit
# timestamp of our request (an off-path spoofer must guess 64 random bits), a time after
# FLOOR_MS. Times are integer milliseconds (float32 boards: a Unix time in a float has a
# 128-s step); NTP's era 1 (from 2036) is taken as such.

import asyncio
import os
import socket
import sys

from clock import board_ms
from mpshim import asleep_ms, ticks_diff, ticks_ms

PORT = 123
PERIOD_S = 3600         # a crystal drifts a few seconds a day; the head-end corrects the rest
RETRY_S = 60
TIMEOUT_MS = 2000
NTP_TO_UNIX_S = 2208988800
FLOOR_MS = 1704067200000    # 2024-01-01: nothing earlier is a plausible answer


class NtpError(Exception):
    pass


def request():
    """(packet, nonce): a client request whose transmit timestamp is 8 random bytes."""
    nonce = os.urandom(8)
    return b"\x23" + bytes(39) + nonce, nonce


def _u32(data, at):
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]


def parse(data, nonce):
    """Unix ms of the server's transmit timestamp in answer `data` to our request `nonce`."""
    if not isinstance(data, (bytes, bytearray)) or len(data) < 48:
        raise NtpError("short NTP answer")
    mode, version, stratum = data[0] & 7, (data[0] >> 3) & 7, data[1]
    if mode != 4 or not 1 <= version <= 4:
        raise NtpError("not an NTP server answer")
    if not 1 <= stratum <= 15:
        raise NtpError("NTP server unsynchronised or refusing (stratum %d)" % stratum)
    if bytes(data[24:32]) != nonce:
        raise NtpError("NTP answer to another request")
    secs = _u32(data, 40)
    if secs < 0x80000000:   # era 1: 2036-02-07 and later
        secs += 0x100000000
    ms = (secs - NTP_TO_UNIX_S) * 1000 + ((_u32(data, 44) * 1000) >> 32)
    if ms < FLOOR_MS:
        raise NtpError("NTP time before 2024")
    return ms


def address(host):
    """`host` or `host:port` as a socket address (a blocking DNS lookup, as httpc's)."""
    name, _, port = host.partition(":")
    return socket.getaddrinfo(name, int(port) if port else PORT)[0][-1]


async def query(host, timeout_ms=TIMEOUT_MS):
    """Unix ms now, from `host`; NtpError or OSError. Non-blocking: metering keeps running."""
    packet, nonce = request()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.sendto(packet, address(host))
        sent = ticks_ms()
        bad = None      # a refused answer: a genuine one may still come, until the timeout
        while True:
            try:
                data = s.recv(64)
            except OSError:     # EAGAIN: nothing yet
                data = None
            if data is not None:
                took = ticks_diff(ticks_ms(), sent)
                try:
                    return parse(data, nonce) + took // 2
                except NtpError as exc:
                    bad = exc
            if ticks_diff(ticks_ms(), sent) > timeout_ms:
                raise bad or NtpError("no NTP answer from %s within %d ms" % (host, timeout_ms))
            await asleep_ms(20)
    finally:
        s.close()


def apply(app, ms):
    """NTP says it is `ms` (Unix ms): set the board's RTC where the board can, keep every
    wall time the App has made, and follow NTP only until the head-end has set the clock."""
    set_rtc = getattr(app.board, "set_rtc", None)
    t0 = ticks_ms()
    before = board_ms()
    if set_rtc is not None:
        set_rtc(ms)
    step = board_ms() - before - ticks_diff(ticks_ms(), t0)   # how far the RTC moved
    app.started_board_ms += step      # the App's stamps count from its start: keep them
    app.clock.offset_ms -= step
    if not app.clock.synced:
        app.clock.offset_ms = ms - board_ms()
    return step


def log(msg):
    try:
        sys.stderr.write("ntp: %s\n" % msg)
    except Exception:
        pass


async def run(app, host, asked=None):
    """The App's NTP task: set the time at start, then every PERIOD_S (RETRY_S after a
    failure, said once on stderr). `asked` (an asyncio.Event) is set once the first query
    has an answer or has failed: the comms wait for it before their first exchange."""
    failed = False
    while True:
        try:
            apply(app, await query(host))
            failed = False
            wait = PERIOD_S
        except (NtpError, OSError, ValueError, IndexError) as exc:
            if not failed:
                log("%s: %s" % (host, exc))
            failed = True
            wait = RETRY_S
        if asked is not None:
            asked.set()
        await asyncio.sleep(wait)


async def first(app, host, talk):
    """Await the coroutine `talk` (the comms) once NTP's first query has answered or failed,
    so that a board that woke in 2000 is not refused its first exchange; NTP keeps the time
    beside it for as long as `talk` runs."""
    asked = asyncio.Event()
    task = asyncio.create_task(run(app, host, asked))
    try:
        await asked.wait()
        await talk
    finally:
        task.cancel()
