"""The hardware-in-the-loop smoke set (issue 11, item 7; tools/lab/hil.py): `make hil
BOARD=esp32|rp2 PORT=/dev/ttyUSB0 [HIL_SERVER=https://...]`. Outside make test (the slow
lane); on a machine without a board every case skips with the reason. The last test checks
that skip, so the lane itself is tested where no board is."""

import os
import subprocess
import sys

import pytest

from lab import deploy, hil

pytestmark = pytest.mark.slow

S = hil.settings()
MISSING = hil.hil_missing_reason(S)
needs_board = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def deployed():
    rc = deploy.cli(["--board", S["board"], "--port", S["port"], "--device-id", "hil-1",
                     "--server-url", S["server"]])
    assert rc == 0, "make deploy failed on the board"
    return S["port"]


@needs_board
def test_deploy_then_meter_without_a_lost_block(deployed):
    r = hil.board_json(deployed, hil.METER_FOR % 20, timeout=120)
    assert r["vrms"] is not None and r["n"], r      # readings from the real ADC
    assert r["overruns"] == 0, r                     # no sample block lost in 20 s
    assert r["harmonic_order"] == 1                  # boards.json: THD off on a board


@needs_board
def test_field_repl_round_trip(deployed):
    r = hil.board_json(deployed, hil.REPL_ROUND_TRIP)
    assert r["after"] == r["before"] + 1 and r["restored"] == r["before"]


@needs_board
@pytest.mark.skipif(not S["server"], reason="no head-end for the board: make hil "
                    "HIL_SERVER=https://host:port (reachable over the board's Wi-Fi)")
def test_one_exchange_with_the_head_end(deployed):
    # bc.test_exchange(): one exchange with the head-end deploy configured, True when done
    out = hil.board_exec(deployed, "import bc\nprint('HIL', bc.test_exchange())", timeout=90)
    assert "HIL True" in out, out


def test_without_a_board_the_set_skips_with_the_reason(tmp_path):
    env = dict(os.environ, BC_HIL_PORT=str(tmp_path / "ttyUSB9"), BC_HIL_BOARD="esp32",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        "-m", "slow", __file__, "-k", "not without_a_board"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:]
    assert "3 skipped" in p.stdout
    assert "no board attached at %s" % (tmp_path / "ttyUSB9") in p.stdout
