"""Flash writes per day at the default settings (issue 13: the flash must last 15 years on
each board): a simulated day of the firmware's register save policy and outbox, at the
defaults, counted at the store layer (store.write_record: register slots, `acked`, the seq
ceiling; Outbox.appends: segment appends). The counts are the inputs of the flash-life model
in docs/reliability.md ("Flash life"), which turns them into erases with the LittleFS
measurements of tools/bench/flash_wear_mp.py; this checks that the model's inputs are what
the firmware does, and that the docs state them."""

import re

import pytest
import store
from config import DEFAULTS
from energy import Registers, RegisterStore, SavePolicy
from live_config import outbox_hold
from outbox import Outbox

from lab import runner

pytestmark = pytest.mark.unit

STEP = 1.0                      # s: the policy is asked every sample block (40 ms); a
                                # second is as exact for whole-second gaps, and 5x quicker
READING = {"t": 1796553338, "vrms": 230.12, "irms": 6.865, "p": 1500.2, "q": 493.1,
           "import_wh": 12345.678, "unsaved": {"import_wh": 1.2}}

# The model's inputs (docs/reliability.md "Flash life"): writes a day at the defaults.
MODEL = {
    # (load W, head-end acks readings before `hold` of them are held?) -> writes by file
    (0, True): {"energy": 1440, "outbox appends": 0, "acked": 0},
    (10000, True): {"energy": 4329, "outbox appends": 0, "acked": 0},
    (0, False): {"energy": 1440, "outbox appends": 1440, "acked": 1440},
    (10000, False): {"energy": 4329, "outbox appends": 1440, "acked": 1440},
}


class FakeMeter:
    def __init__(self):
        self.registers = Registers(1)

    def fold_energy(self):
        pass


def simulated_day(tmp_path, monkeypatch, p_w, online):
    """Writes by file in one day at the defaults: the save policy at a constant load p_w
    (energy.RegisterStore saves), a reading every report_s into an outbox holding
    outbox_hold(DEFAULTS) of them; online: each reading is acked at the next exchange (the
    default continuous long-poll), else only once it is on flash (a meter its head-end
    polls rarely, or one cut off for a while and then back)."""
    writes = {}
    real = store.write_record

    def counted(path, data):
        name = path.rsplit("/", 1)[-1]
        key = "energy" if name.startswith("energy") else name
        writes[key] = writes.get(key, 0) + 1
        return real(path, data)
    monkeypatch.setattr(store, "write_record", counted)
    meter = FakeMeter()
    energy = RegisterStore(str(tmp_path / "energy"))
    policy = SavePolicy(DEFAULTS["persist_s"], meter)
    outbox = Outbox(str(tmp_path / "outbox"), hold=outbox_hold(DEFAULTS))
    writes.clear()                      # what opening costs is per boot, not per day
    per_step = p_w * STEP / 3.6         # mWh
    carry = 0.0
    every = int(round(DEFAULTS["report_s"] / STEP))
    for i in range(int(86400 / STEP)):
        carry += per_step
        whole = int(carry)
        carry -= whole
        meter.registers.import_wh.add_mwh(whole)
        if policy.due((i + 1) * STEP):
            energy.save(meter.registers)
        if (i + 1) % every == 0:
            before = outbox.appends
            seq = outbox.offer("reading", READING)
            if online or outbox.appends != before:
                outbox.ack(seq)
    writes["outbox appends"] = outbox.appends
    return writes


@pytest.mark.parametrize("p_w,online", sorted(MODEL), ids=lambda x: str(x))
def test_writes_per_day_at_the_defaults_are_the_models(tmp_path, monkeypatch, p_w, online):
    writes = simulated_day(tmp_path, monkeypatch, p_w, online)
    want = MODEL[(p_w, online)]
    assert writes.get("energy", 0) == want["energy"], writes
    assert writes["outbox appends"] == want["outbox appends"], writes
    assert writes.get("acked", 0) == want["acked"], writes
    # the seq ceiling is raised once per RESERVE seqs: 8,640 readings a day
    assert writes.get("seq", 0) <= 8640 // 32 + 1, writes
    assert set(writes) <= {"energy", "acked", "seq", "outbox appends"}, writes


def test_the_docs_state_the_models_inputs():
    text = (runner.ROOT / "docs" / "reliability.md").read_text()
    section = text[text.index("## Flash life"):]
    section = section[:section.index("\n## ", 1)]
    figures = {int(n.replace(",", "")) for n in re.findall(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b",
                                                          section)}
    for writes in MODEL.values():
        for n in writes.values():
            assert n == 0 or n in figures, (n, "not in docs/reliability.md Flash life")
    assert "15 years" in section
