"""Energy of short lives (docs/reliability.md): a meter whose every life is shorter than
persist_s still keeps its energy, losing at most the documented bound per life, and the save
policy's flash writes per day stay under its cap."""

import json

import config  # noqa: E402
import metering  # noqa: E402
import pytest
from energy import (  # noqa: E402
    LOAD_GAP_S,
    MIN_GAP_S,
    SAVE_WH,
    Registers,
    RegisterStore,
    SavePolicy,
)

from boards import sim_board as sim
from lab import runner

pytestmark = pytest.mark.system

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "energy_short_life.py"
P_W = 1500.0
SCENARIO = {"nominal_v": 230, "frequency": 50, "samples_per_cycle": 64,
            "loads": [{"at_s": 0, "p_w": P_W, "pf": 1.0}], "config": {"persist_s": 60}}
LIVES = [3.0, 7.5, 12.0, 31.0, 44.0, 58.0, 4.5, 21.0]     # seconds, all under persist_s


def bound_wh(p_w, persist_s):
    """Most energy a power cut loses (docs/reliability.md): min(P persist_s, max(SAVE_WH,
    P LOAD_GAP_S)); before a life's first save, P MIN_GAP_S."""
    return min(p_w * persist_s / 3600.0, max(SAVE_WH, p_w * min(LOAD_GAP_S, persist_s) / 3600.0))


def flash_mwh(state, units_per_mwh):
    regs = Registers(units_per_mwh)
    saved = RegisterStore(str(state / "energy")).load()
    if saved is None:
        return 0
    regs.restore(saved)
    return regs.import_wh.total_mwh()


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_lives_shorter_than_persist_s_keep_their_energy(tmp_path, interpreter):
    scenario = tmp_path / "load.json"
    scenario.write_text(json.dumps(SCENARIO))
    cfg = config.validate(SCENARIO["config"])
    units = metering.Meter(cfg, sim.SimBoard(SCENARIO)).registers.import_wh.units_per_mwh
    state = tmp_path / "state"
    # slack: one sample block (128 samples at 3200 Hz) of the load, plus mWh rounding
    limit_mwh = bound_wh(P_W, cfg["persist_s"]) * 1000 + P_W * 0.04 / 3.6 + 2
    on_flash = 0
    metered = 0.0
    for n, seconds in enumerate(LIVES):
        out = json.loads(runner.run(interpreter, DRIVER, str(state), str(scenario), str(seconds)))
        assert out["start_mwh"] == on_flash, "life %d did not start from flash" % n
        gained = out["end_mwh"] - out["start_mwh"]
        # independent of the firmware's registers: the load's energy over the life (±1 %)
        assert abs(gained - P_W * seconds / 3.6) <= 0.01 * P_W * seconds / 3.6 + 2
        metered += gained
        before, on_flash = on_flash, flash_mwh(state, units)
        lost = out["end_mwh"] - on_flash
        assert 0 <= lost <= limit_mwh, (n, seconds, lost, limit_mwh)
        if seconds >= MIN_GAP_S:            # every life that reaches MIN_GAP_S saves
            assert on_flash > before and out["saves"] >= 1, (n, out)
    # repeated short lives: the energy kept is the energy metered minus at most the bound
    # per life (before the policy, every life here lost all it metered: nothing was kept)
    assert on_flash >= metered - len(LIVES) * limit_mwh
    assert on_flash >= 0.7 * metered


class FakeMeter:
    """Registers fed at a constant power, for the policy alone."""

    def __init__(self):
        self.registers = Registers(1)

    def fold_energy(self):
        pass


@pytest.mark.parametrize("p_w", [0, 300, 1500, 10000, 100000])
@pytest.mark.parametrize("persist_s", [5, 60])
def test_policy_bounds_unsaved_energy_and_writes_per_day(p_w, persist_s):
    meter = FakeMeter()
    policy = SavePolicy(persist_s, meter)
    step = 0.2                                    # five sample blocks of 128 at 3200 Hz
    per_step = p_w * step / 3.6                   # mWh
    carry, saved, worst = 0.0, 0, 0
    t = 0.0
    for i in range(int(86400 / step)):
        t = (i + 1) * step
        carry += per_step
        whole = int(carry)
        carry -= whole
        meter.registers.import_wh.add_mwh(whole)
        if policy.due(t):
            saved = meter.registers.import_wh.total_mwh()
        worst = max(worst, meter.registers.import_wh.total_mwh() - saved)
    writes = policy.writes
    # one per LOAD_GAP_S, and one per MIN_GAP_S in the life's first persist_s: 4,332 a day
    assert writes <= 86400 / min(LOAD_GAP_S, persist_s) + persist_s / min(MIN_GAP_S, persist_s) + 1
    assert writes >= 86400 / persist_s - 1                    # at least as before
    assert worst <= bound_wh(p_w, persist_s) * 1000 + per_step + 1, (worst, writes)


def test_policy_saves_soon_after_a_reset():
    meter = FakeMeter()
    meter.registers.import_wh.restore([5000, 0, 0])
    policy = SavePolicy(600, meter)
    assert not policy.due(MIN_GAP_S)              # nothing metered: nothing to save
    meter.registers.import_wh.add_mwh(10)
    assert policy.due(MIN_GAP_S + 0.5)            # the first save of the life
    meter.registers.import_wh.restore([0, 0, 0])  # reset_energy
    assert not policy.due(MIN_GAP_S + 1)          # never sooner than MIN_GAP_S
    assert policy.due(2 * MIN_GAP_S + 0.5)
    assert policy.unsaved_mwh() == 0
