"""Board time from NTP (issue 12, 6: with `ntp_host` configured, boards set their RTC from
NTP; the signed head-end time still governs the replay window). An SNTP server in the test
answers the real firmware (firmware/ntp.py) on every interpreter, honestly or as an attacker
on the path would: a kiss-of-death, an answer to another request (spoofed without seeing
ours), a time from 1990 or 2040. The real processes: test_attacks_ntp_system.py."""

import socket
import struct
import threading
import time

import config
import pytest

from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "ntp_checks.py"
FAKES = runner.ROOT / "host_tests" / "fakes"
NTP_EPOCH = 2208988800
Y2000 = 946684800


class SntpServer:
    """Answers every request on 127.0.0.1 as `mode` says: "ok" (the time now + shift_s),
    "kod" (stratum 0), "spoof" (another originate timestamp), "silent"; `delay_s` late."""

    def __init__(self, mode="ok", shift_s=0, delay_s=0):
        self.mode, self.shift_s, self.delay_s = mode, shift_s, delay_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            self.requests += 1
            if self.mode == "silent" or len(data) < 48:
                continue
            time.sleep(self.delay_s)
            now = time.time() + self.shift_s + NTP_EPOCH
            secs = int(now) & 0xFFFFFFFF
            frac = int((now % 1) * 2 ** 32)
            origin = data[40:48] if self.mode != "spoof" else bytes(8)
            stratum = 0 if self.mode == "kod" else 2
            answer = (bytes([0x24, stratum, 6, 0xEC]) + bytes(20) + origin
                      + struct.pack("!II", secs, frac) * 2)
            self.sock.sendto(answer, peer)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def sntp():
    servers = []

    def make(*a):
        servers.append(SntpServer(*a))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def _check(interpreter, server, skew_s, synced=False):
    out = runner.run(interpreter, CHECKS, "127.0.0.1:%d" % server.port, str(skew_s),
                     "1" if synced else "0", extra=[FAKES])
    return runner.records(out)[0]


def test_a_board_in_2000_takes_the_time_from_ntp_and_sets_its_rtc(interpreter, sntp):
    r = _check(interpreter, sntp(), int(Y2000 - time.time()))
    assert "error" not in r, r
    assert abs(r["now_ms"] - time.time() * 1000) < 3000
    assert len(r["rtc"]) == 1 and abs(r["rtc"][0] - time.time() * 1000) < 3000
    # boards.contract.set_rtc: the fields machine.RTC.datetime takes, weekday Monday = 0
    assert r["rtc_tuple"] == [2025, 12, 6, 5, 5, 46, 40, 123000]


@pytest.mark.parametrize("mode, shift, why", [
    ("kod", 0, "stratum 0"),
    ("spoof", 0, "NTP answer to another request"),
    ("ok", -36 * 365 * 86400, "NTP time before 2024"),      # 1990
    ("silent", 0, "no NTP answer"),
])
def test_a_hostile_or_silent_ntp_server_changes_nothing(interpreter, sntp, mode, shift, why):
    r = _check(interpreter, sntp(mode, shift), int(Y2000 - time.time()))
    assert why in r["error"], r
    assert r["rtc"] == [] and r["moved_ms"] == 0


def test_the_comms_start_once_ntp_has_answered(interpreter, sntp):
    """ntp.first: the comms' first exchange waits for NTP's first answer (here 0.8 s late),
    so a board that woke in 2000 signs it with the right time."""
    server = sntp("ok", 0, 0.8)
    out = runner.run(interpreter, CHECKS, "127.0.0.1:%d" % server.port,
                     str(int(Y2000 - time.time())), "0", "first", extra=[FAKES])
    r = runner.records(out)[0]
    assert abs(r["talk_started_ms"] - time.time() * 1000) < 3000, r
    assert len(r["rtc"]) == 1 and server.requests == 1


def test_ntp_never_overrules_the_head_ends_signed_time(interpreter, sntp):
    """A spoofed NTP answer on the path says 2040: the RTC follows, the wall time the meter
    signs with (set by the head-end) does not move."""
    r = _check(interpreter, sntp("ok", 14 * 365 * 86400), 0, synced=True)
    assert "error" not in r, r
    assert len(r["rtc"]) == 1 and r["rtc"][0] > 2200000000000     # the RTC: 2040
    assert abs(r["moved_ms"]) < 1000


def test_ntp_host_is_console_only_and_checked():
    assert config.refusal("ntp_host", "utility") == \
        "ntp_host can only be set at the serial console (bc.set)"
    assert config.validate({"ntp_host": "pool.ntp.org"})["ntp_host"] == "pool.ntp.org"
    assert config.validate({"ntp_host": "10.0.0.1:1123"})["ntp_host"] == "10.0.0.1:1123"
    with pytest.raises(config.ConfigError, match="ntp_host must be a host name"):
        config.validate({"ntp_host": "pool.ntp.org/evil"})

