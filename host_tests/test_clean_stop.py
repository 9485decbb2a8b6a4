"""A clean stop saves the energy registers (issue 13, item 1): bc.stop() at the REPL, under
MicroPython and CPython (host_tests/mp_scripts/bc_stop.py), and SIGTERM to the desktop
meter under CPython (MicroPython's unix port has no signal module; SIGINT there is in
test_registers_monotonic.py)."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "bc_stop.py"


def test_bc_stop_saves_the_registers_and_ends_the_app(interpreter, tmp_path):
    lines = runner.run(interpreter, SCRIPT, str(tmp_path), timeout=120).splitlines()
    assert lines[:2] == ["bc: registers saved; the app stops now",
                         "bc: registers saved; the app was already stopped"]
    out = json.loads(lines[-1])
    assert out["stopped"] is True and out["saved_at_stop"] is True
    assert out["outcome"] == "stopped"
    assert out["on_flash"] == out["live"]           # everything metered is on flash
    assert out["live"]["import_wh"][:2] != [0, 0] and out["live"]["import_varh"] != [0, 0, 0]
    assert out["unsaved"] == {"import_wh": 0, "export_wh": 0, "import_varh": 0,
                              "export_varh": 0}
    assert out["again"] is True                     # stopped already: saves again, says so
