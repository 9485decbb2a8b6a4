"""firmware/mpshim.py, the one module that owns what differs between MicroPython and CPython:
its CPython stand-ins behave as MicroPython's own names do. The oracle is the board
interpreter (32-bit MicroPython, whose ticks wrap at 2**30 as on the ESP32 and RP2040; the
64-bit unix port's ticks wrap at 2**62, so it is checked only where the period does not
matter)."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "mpshim_checks.py"


def findings(interpreter):
    text = runner.run(interpreter, CHECKS)
    lines = text.splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_cpython_ticks_wrap_as_a_32_bit_board():
    if not runner.available("board"):
        pytest.skip(runner.board_missing_reason())
    want, _ = findings("board")
    got, _ = findings("cpython")
    for name in ("diff", "add", "add_overflow", "add_then_diff", "const", "viper",
                 "u_modules", "ms_in_range", "us_in_range"):
        assert got[name] == want[name], name
    assert want["add_overflow"] == 2 and want["ms_in_range"] and want["us_in_range"]


@pytest.mark.parametrize("interpreter", runner.INTERPRETERS)
def test_sleeps_and_tracebacks(interpreter):
    if not runner.available(interpreter):
        pytest.skip(runner.board_missing_reason())
    got, printed = findings(interpreter)
    assert 25 <= got["slept_ms"] < 1000
    assert 15 <= got["blocked_ms"] < 1000
    assert "ValueError: shown" in printed and "Traceback" in printed
    assert got["add_then_diff"] == [1000] * 7
    # one cancel did not end the stubborn task; cancel_all did, and the polite one too
    assert got["cancel_all"] == {"after_one_cancel": False, "ended": True, "swallowed": 2,
                                 "done": [True, True]}
