"""Registers the head-end has stored never go backwards (issue 13, item 1). The simulated
meter against the real head-end, stopped and restarted again and again: a clean stop
(SIGINT; SIGTERM under CPython, the unix port having no signal module) must save all it
metered, and a kill -9 may lose what was unsaved but never a value already reported,
because a reading reports the saved registers and the unsaved energy apart."""

import signal
import time

import pytest

from lab import processes

pytestmark = pytest.mark.system

REGISTERS = ("import_wh", "export_wh", "import_varh", "export_varh")


def _readings(api):
    rows = api.get("/v1/devices/m-1/readings?limit=10000").json()
    return sorted(rows, key=lambda r: r["seq"])


def _backwards(rows):
    out = []
    for a, b in zip(rows, rows[1:]):
        for name in REGISTERS:
            if b["body"][name] < a["body"][name]:
                out.append((name, a["seq"], a["body"][name], b["seq"], b["body"][name]))
    return out


def _lives(meter, api, stops):
    """Run a life per stop (each ended by that signal) and one more; the readings of each."""
    lives = []
    for stop in list(stops) + [None]:
        before = len(_readings(api))
        meter.start()
        time.sleep(3)
        processes.wait_until(lambda n=before: len(_readings(api)) > n + 2, 30,
                             "readings from this life")
        if stop is not None:
            meter.kill(stop)
            clean = stop != signal.SIGKILL
            assert not clean or meter.proc.returncode == 0, meter.log()
        lives.append((stop, _readings(api)[before:]))
    return lives


@pytest.mark.parametrize("interpreter,clean", [("micropython", signal.SIGINT),
                                               ("cpython", signal.SIGTERM)])
def test_registers_never_decrease_across_stops_and_kills(tmp_path, interpreter, clean):
    he = processes.Headend(tmp_path)
    key = he.add_device("m-1")
    api = he.api(he.add_token("op", "operator"))
    he.start()
    meter = processes.Meter(tmp_path, "m-1", key, he.url, interpreter=interpreter)
    try:
        lives = _lives(meter, api, (clean, clean, signal.SIGKILL, clean))
        rows = [r for _, life in lives for r in life]
        assert rows[-1]["body"]["import_wh"] > 0 and rows[-1]["body"]["import_varh"] > 0
        assert _backwards(rows) == []
        # a clean stop saved everything: the next life starts at or above the last reading's
        # saved + unsaved energy
        for (stop, life), (_, following) in zip(lives, lives[1:]):
            if stop == clean:
                last, first = life[-1]["body"], following[0]["body"]
                for name in REGISTERS:
                    assert first[name] >= round(last[name] + last["unsaved"][name], 3), \
                        (name, last, first)
    finally:
        meter.kill()
        he.kill()
