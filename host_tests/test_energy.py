"""Energy registers: exact integer accumulation, 10 years at full scale without loss,
power loss (kill -9) between persists, and damaged slot files."""

import json
import os
import random
import signal
import subprocess
import time
from types import SimpleNamespace

import config  # noqa: E402
import metering  # noqa: E402
import numpy as np
import pytest
from budget import examples
from energy import Registers, RegisterStore  # noqa: E402
from hypothesis import given, settings
from hypothesis import strategies as st

from boards import sim_board as sim
from lab import runner
from sim import METERING_MAIN

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "energy_registers.py"
HALF_CYCLE = st.integers(-2**29, 2**29)
UNITS_PER_MWH = st.integers(1, 2**28)


def register_units(reg):
    return (reg.kwh * 10**6 + reg.mwh) * reg.units_per_mwh + reg.rem


def state_units(state, units_per_mwh):
    kwh, mwh, rem = state
    assert 0 <= mwh < 10**6 and 0 <= rem < units_per_mwh
    return (kwh * 10**6 + mwh) * units_per_mwh + rem


# (a) exact sums

@settings(max_examples=examples(300), deadline=None)
@given(UNITS_PER_MWH, st.lists(HALF_CYCLE, max_size=300))
def test_register_is_the_exact_sum(units_per_mwh, amounts):
    regs = Registers(units_per_mwh)
    for a in amounts:
        regs.add_active(a)
    assert state_units(regs.import_wh.state(), units_per_mwh) == sum(a for a in amounts if a > 0)
    assert state_units(regs.export_wh.state(), units_per_mwh) == -sum(a for a in amounts if a < 0)


@settings(max_examples=examples(10), deadline=None)
@given(st.lists(st.tuples(UNITS_PER_MWH, st.lists(HALF_CYCLE, max_size=200)), min_size=1,
                max_size=10))
def test_register_is_the_exact_sum_under_micropython(cases):
    out = json.loads(runner.run("micropython", DRIVER, "sum", stdin=json.dumps(cases).encode()))
    for (units_per_mwh, amounts), (imp, exp) in zip(cases, out):
        assert state_units(imp, units_per_mwh) == sum(a for a in amounts if a > 0)
        assert state_units(exp, units_per_mwh) == -sum(a for a in amounts if a < 0)


# (b) 10 years at full scale

def full_scale_meter():
    # 100 kW at 230 V is 435 A rms; full scale 1000 A peak, 64 samples per cycle at 50 Hz
    board = SimpleNamespace(sample_rate=3200, channel_delay_s=0.0, v_gain=230 * 2**0.5 * 1.6 / 2048,
                            i_gain=1000 / 2048, v_mid=2048, i_mid=2048)
    return metering.Meter(config.validate({}), board)


def test_ten_years_at_full_scale_lose_nothing():
    meter = full_scale_meter()
    joules_per_unit = meter.v_gain * meter.i_gain * meter.ts
    regs = meter.registers
    reg = regs.import_wh
    day_units = round(100e3 * 86400 / joules_per_unit)
    days = 3653  # 10 years
    for _ in range(days):  # day-sized chunks: far above 2**30, fine on CPython only
        reg.add_units(day_units)
    assert register_units(reg) == days * day_units
    assert 8.7e6 < reg.kwh < 2**30

    full_half = 100e3 * 0.01 / joules_per_unit  # raw units of 100 kW over one half cycle
    assert full_half < 2**29
    rng = np.random.default_rng(5)
    amounts = rng.integers(int(0.8 * full_half), int(full_half), size=1_000_000)
    for a in amounts.tolist():
        regs.add_active(a)
    added = int(amounts.sum())
    assert register_units(reg) == days * day_units + added
    assert reg.kwh < 2**30

    # Why integers: a float32 accumulator at 8.8e9 Wh has a step of 1024 Wh, so each
    # per-half-cycle increment (~0.25 Wh) rounds away.
    preload_wh = np.float32(days * day_units * joules_per_unit / 3600)
    steps = (amounts * (joules_per_unit / 3600)).astype(np.float32)
    acc = np.add.accumulate(np.concatenate([[preload_wh], steps]), dtype=np.float32)[-1]
    true_gain_wh = added * joules_per_unit / 3600
    float32_gain_wh = float(acc) - float(preload_wh)
    assert float32_gain_wh < 0.5 * true_gain_wh, (float32_gain_wh, true_gain_wh)


# (c) power loss

SCENARIO = {"nominal_v": 230, "frequency": 50, "samples_per_cycle": 64,
            "loads": [{"at_s": 0, "p_w": 2300, "pf": 1.0}], "config": {"persist_s": 5}}
P_W = 2300.0


def parse_lines(text):
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # the line the kill cut short
            pass
    return out


def test_kill_9_loses_at_most_one_persist_interval(tmp_path):
    scenario = tmp_path / "load.json"
    scenario.write_text(json.dumps(SCENARIO))
    cfg = config.validate(SCENARIO["config"])
    units_per_mwh = metering.Meter(cfg, sim.SimBoard(SCENARIO)).registers.import_wh.units_per_mwh
    persist_wh = P_W * cfg["persist_s"] / 3600
    reading_wh = P_W * cfg["interval_s"] / 3600
    block_wh = P_W * 0.02 / 3600  # slack: one sample block plus rounding to mWh
    state = tmp_path / "state"
    state.mkdir()
    cmd, env = runner.command("micropython", METERING_MAIN, str(scenario),
                          "--state", str(state))
    rng = random.Random(11)
    previous = 0.0
    advanced = 0
    n = 0
    while n < 12 or (advanced < 3 and n < 40):  # more kills only on a slow machine
        out_path, err_path = tmp_path / ("out%d" % n), tmp_path / ("err%d" % n)
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
            # a loaded machine starts MicroPython slowly: later kills wait longer (up to 3 s)
            # so that some land after a persist
            time.sleep(rng.uniform(0.05, min(3.0, 0.5 + 0.25 * max(0, n - 11))))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, err_path.read_text()
        readings = [r for r in parse_lines(out_path.read_text()) if r["type"] == "reading"]

        regs = Registers(units_per_mwh)
        store = RegisterStore(str(state / "energy"))
        saved = store.load()
        assert store.damaged == 0
        if saved is not None:
            regs.restore(saved)  # also checks the state is well formed
        slot = regs.import_wh.wh()
        assert slot >= previous, "registers went backwards after kill %d" % n
        if readings:
            assert readings[0]["import_wh"] >= previous - 1e-9, "restart did not restore"
            last = readings[-1]["import_wh"]
            assert last - slot <= persist_wh + block_wh, (n, last, slot)
            assert slot <= last + reading_wh + block_wh, (n, last, slot)
        advanced += slot > previous
        previous = slot
        n += 1
    assert advanced >= 3, "too few kills landed after a persist to test anything"


# (d) damaged slots

def make_slots(path, generations=5):
    regs, rs = Registers(1000), RegisterStore(path)
    for g in range(1, generations + 1):
        regs.import_wh.restore([g, g, g])
        rs.save(regs)
    return path + ".%d" % (generations % 2)  # the newest slot


def damage(data, how, where, extra=b"\x00"):
    if how == "truncate":
        return data[:where % max(len(data), 1)]
    if how == "flip":
        bit = where % (8 * len(data))
        return data[:bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1:]
    if how == "append":
        return data + extra
    return extra  # replaced by garbage


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(["truncate", "flip", "append", "garbage"]), st.integers(0, 10**6),
       st.binary(max_size=40))
def test_damaged_newest_slot_falls_back(tmp_path_factory, how, where, extra):
    path = str(tmp_path_factory.mktemp("slots") / "energy")
    newest = make_slots(path)
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(damage(data, how, where, extra or b"\x00"))
    rs = RegisterStore(path)
    saved = rs.load()
    assert (rs.gen, rs.damaged, saved["import_wh"]) == (4, 1, [4, 4, 4])


DAMAGES = {
    "empty": lambda d: b"",
    "header_only": lambda d: d[:10],
    "last_byte_cut": lambda d: d[:-1],
    "length_bit": lambda d: damage(d, "flip", 5 * 8),
    "payload_bit": lambda d: damage(d, "flip", 12 * 8 + 3),
    "crc_bit": lambda d: damage(d, "flip", 8 * len(d) - 1),
    "appended": lambda d: d + b"\x00",
    "garbage": lambda d: b"BC1\xff\xff\xff\xff",
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_damaged_slots_under_both(tmp_path, interpreter, name):
    path = str(tmp_path / "energy")
    newest = make_slots(path)
    older = path + ".0" if newest.endswith(".1") else path + ".1"
    with open(newest, "rb") as f:
        data = f.read()
    with open(newest, "wb") as f:
        f.write(DAMAGES[name](data))
    out = json.loads(runner.run(interpreter, DRIVER, "load", path, "1000"))
    assert out == {"loaded": True, "gen": 4, "damaged": 1,
                   "state": dict(Registers(1000).state(), import_wh=[4, 4, 4])}
    with open(older, "wb") as f:
        f.write(b"BC1 not a record")
    out = json.loads(runner.run(interpreter, DRIVER, "load", path, "1000"))
    assert out == {"loaded": False, "gen": 0, "damaged": 2, "state": Registers(1000).state()}
