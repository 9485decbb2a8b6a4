"""What the fault campaigns check against (tools/faults/cli.py): a stopped meter's flash, read
as the firmware reads it, and the ledger checks on what the head-end stored."""
from __future__ import annotations

import json
import math
from pathlib import Path

from faults.campaign import REPORT_S, CampaignFailed, check
from headend.meter_time import record_time
from lab import runner

fw_segments = runner.import_firmware("outbox_segments")  # the firmware's own flash readers
fw_store = runner.import_firmware("store")


# --- flash, read-only (only while the meter is stopped) ------------------------------------

def seg_records(path):
    """[(offset, length, item)] of the well-formed records in a segment, in order."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while True:
        i = data.find(fw_store.MAGIC, pos)
        if i < 0 or i + 7 > len(data):
            return out
        n = int.from_bytes(data[i + 3:i + 7], "little")
        try:
            item = json.loads(fw_store.decode(data[i:i + 11 + n]))
            out.append((i, 11 + n, item))
            pos = i + 11 + n
        except (ValueError, KeyError):
            pos = i + 1


def flash(state):
    """What a stopped meter has on flash: acked seq, intact records (outbox_segments.records, as the
    firmware reads them), energy state, and signs of a write cut short."""
    d = Path(state) / "outbox"
    try:
        acked = int(fw_store.read_record(str(d / "acked")) or 0)
    except ValueError:
        acked = 0
    records, torn = [], 0
    segs = sorted(d.glob("*.seg"), key=lambda p: int(p.stem)) if d.exists() else []
    for seg in segs:
        with open(seg, "rb") as f:
            for item, _ in fw_segments.records(f, 4096):
                if item is None:
                    torn += 1
                else:
                    records.append(item)
    gen, payload, damaged = fw_store.read_latest_generation(str(Path(state) / "energy"))
    energy = json.loads(payload) if payload else None
    tmps = [p.name for p in Path(state).rglob("*.tmp")]
    return {"acked": acked, "records": records, "torn_records": torn, "tmp": tmps,
            "energy": energy, "energy_gen": gen, "energy_damaged": damaged}


def mwh(energy, name="import_wh"):
    kwh, m, _ = energy[name]
    return kwh * 1000000 + m


def dir_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --- ledger checks shared by the campaigns --------------------------------------------------

def check_records_stored(rig, device, snapshots, timeout=60):
    """Every intact record on flash at a snapshot, and every acked seq, is stored at the
    head-end with the same kind and body."""
    def missing():
        return missing_records(rig, device, snapshots)
    try:
        rig.wait(lambda: not missing(), timeout, "every record on flash to be stored", 0.3)
    except CampaignFailed as e:
        # a full outbox drops its oldest readings (firmware/outbox.py): a link that cannot
        # keep up loses them that way (docs/reliability.md, campaign 1 over email)
        dropped = overflow_dropped(rig, device)
        why = (" (the meter reported %d readings dropped for a full outbox)" % dropped
               if dropped else "")
        raise CampaignFailed("never stored (seq, kind)%s: %s\n%s"
                             % (why, missing()[:20], e)) from None
    st = rig.stored(device)
    for s in snapshots:
        for r in s["records"]:
            kind, body = st[r["seq"]]
            check(kind == r["kind"] and same(body, r["body"]),
                  "seq %d on flash differs from the stored item" % r["seq"], r, kind, body)


def overflow_dropped(rig, device):
    """Readings the meter reported dropping because its outbox was full (notices)."""
    return sum(b["count"] for k, b in rig.stored(device).values()
               if k == "notice" and b.get("what") == "readings dropped (outbox full)")


BATCH_ITEMS = 32     # the most items one exchange carries (firmware comms batch_items)


def unexplained_gaps(gaps, dropped, ack_losses):
    """How many missing seqs the meter's overflow notices do not explain (items lost).

    Every gap must be a reading the meter reported dropping. The converse need not hold: a
    reading the head-end stored, whose ack a fault swallowed (a cut or a head-end kill right
    after the store), is still unacked on the meter, which may then drop it for overflow and
    count it, though it is not a gap. That is at most one batch per such fault; more
    over-reporting fails the campaign."""
    over = dropped - len(gaps)
    check(over <= BATCH_ITEMS * ack_losses, "%d readings reported dropped but only %d seqs "
          "missing: more than %d faults x %d items in flight" % (dropped, len(gaps),
                                                                 ack_losses, BATCH_ITEMS))
    return max(0, -over)


# A reading's time is whole ms on the meter (t + t_ms): the grid holds to 10 ms.
GRID_SLACK = 0.01


def check_readings(rig, device, lives, ends, flash_k=None, allow_missing=0, tail=0):
    """Readings unique by seq and t; in each life exactly k = 1..K (no gap), K at least the
    last reading on flash at its end, the last within report_s + 2.5 s of the end, less the
    `tail` newest readings a power cut may take from RAM (held readings, firmware/outbox.py).
    Returns {life: K}."""
    rows = [(s, b) for s, (k, b) in rig.stored(device).items() if k == "reading"]
    times = [record_time(b) for _, b in rows]
    check(len(times) == len(set(times)), "a reading stored twice:",
          sorted(t for t in times if times.count(t) > 1)[:10])
    ks = {i: [] for i in range(len(lives))}
    phases = {}
    for t in times:
        i = max((j for j, s in enumerate(lives) if s < t), default=None)
        check(i is not None, "reading before the first start", t)
        x = (t - lives[i]) / REPORT_S
        phase = phases.setdefault(i, x - math.floor(x + GRID_SLACK))
        k = round(x - phase)
        check(abs(x - phase - k) < GRID_SLACK and k >= 1,
              "reading t=%r off its life's grid by %.3f s" % (t, (x - phase - k) * REPORT_S))
        ks[i].append(k)
    out = {}
    for i in range(len(lives)):
        got = sorted(ks[i])
        gone = [k for k in range(1, (got or [0])[-1] + 1) if k not in got]
        check(len(gone) <= allow_missing, "life %d: readings missing, k =" % i, gone[:20],
              "(%d reported dropped)" % allow_missing)
        allow_missing -= len(gone)
        K = (got or [0])[-1]
        if flash_k and i in flash_k:
            check(K >= flash_k[i], "life %d: reading k=%d on flash lost" % (i, flash_k[i]))
        if i in ends:
            expect = (ends[i] - lives[i]) / REPORT_S
            check(K >= expect - (REPORT_S + 2.5) / REPORT_S - tail,
                  "life %d: readings stop early: K=%d, %.1f s lived" % (i, K, ends[i] - lives[i]))
        out[i] = K
    return out


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            abs(a - b) <= 1e-9 * max(1.0, abs(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def duplicates(rig, device):
    """Items the head-end stored twice: a reading (by its t) or a work result (by work id)."""
    seen, n = set(), 0
    for kind, body in rig.stored(device).values():
        key = (kind, body.get("t")) if kind == "reading" else \
            (kind, body.get("work")) if kind == "result" else None
        if key is not None:
            n += key in seen
            seen.add(key)
    return n


def missing_records(rig, device, snapshots):
    st = rig.stored(device)
    return [("acked", s["acked"]) for s in snapshots if s["acked"] and s["acked"] not in st] \
        + [(r["seq"], r["kind"]) for s in snapshots for r in s["records"] if r["seq"] not in st]


def check_results_once(rig, device):
    """Each work id has at most one stored result: nothing ran twice."""
    seen = {}
    for kind, body in rig.stored(device).values():
        if kind == "result":
            seen[body["work"]] = seen.get(body["work"], 0) + 1
    twice = {w: n for w, n in seen.items() if n > 1}
    check(not twice, "work ran twice (results stored):", twice)
    return seen


def tear(state, target, snap, stored, rng):
    """Leave flash as a power cut in the middle of a write would: the newest outbox record
    half-appended (dropped from the snapshot: its write never finished), or a write-then-
    rename cut before the rename (a partial .tmp of the energy slot, inbox or seq ceiling).
    Returns the torn seq for the outbox, True for a .tmp, None if nothing fit."""
    state = Path(state)
    if target == "outbox":
        segs = sorted((state / "outbox").glob("*.seg"), key=lambda p: int(p.stem))
        recs = seg_records(segs[-1]) if segs else []
        if not recs:
            return None
        o, n, item = recs[-1]
        if item["seq"] <= snap["acked"] or item["seq"] in stored:
            return None
        with open(segs[-1], "r+b") as f:
            f.truncate(o + rng.randrange(1, n))
        snap["records"] = [r for r in snap["records"] if r["seq"] != item["seq"]]
        return item["seq"]
    path = {"energy": state / ("energy.%d.tmp" % (((snap["energy_gen"] or 0) + 1) % 2)),
            "inbox": state / "inbox.tmp", "seq": state / "outbox" / "seq.tmp"}[target]
    rec = fw_store.encode(json.dumps({"torn": "x" * 40}).encode())
    path.write_bytes(rec[:rng.randrange(1, len(rec))])
    return True



# --- registers the head-end stored never decrease within an outbox epoch (issue 13) --------

REGISTERS = ("import_wh", "export_wh", "import_varh", "export_varh")
NEW_EPOCH = "new outbox epoch"          # the head-end's notice (headend/ingest.py)
ENERGY_DAMAGED = "energy slots damaged"  # the meter's notice: it fell back to an older save


def stored_registers(kind, body):
    """The register values one stored item carries: a reading's own, a read result's
    `registers` (both the saved registers, docs/protocol.md); None for any other item."""
    if kind == "reading":
        regs = body
    elif kind == "result" and isinstance(body.get("body"), dict):
        regs = body["body"].get("registers")
    else:
        return None
    if not isinstance(regs, dict) or not all(n in regs for n in REGISTERS):
        return None
    return {n: regs[n] for n in REGISTERS}


def register_decreases(items, resets=()):
    """Where a stored register value is below one stored before it in the same outbox epoch.

    items: (epoch, seq, kind, body) of everything the head-end stored for one meter, in the
    order it stored them; epochs are taken in the order they first appear, and within one the
    meter's seq is its order. A new epoch must start with the head-end's "new outbox epoch"
    notice (a wipe or board swap is an event), and then its registers may start anywhere. Within
    an epoch the only decreases allowed are the ones the meter said it made: a reset_energy
    result (its work id in resets) or an "energy slots damaged" notice (the newest save was
    corrupt, it restored the one before). Returns a list of one-line descriptions."""
    epochs = {}
    for epoch, seq, kind, body in items:
        epochs.setdefault(epoch, []).append((seq, kind, body))
    out = []
    for n, (epoch, rows) in enumerate(epochs.items()):
        rows.sort(key=lambda r: r[0])
        if n and not any(k == "notice" and b.get("what") == NEW_EPOCH for _, k, b in rows):
            out.append("epoch %s: no %r notice recorded" % (epoch, NEW_EPOCH))
        high = {}
        for seq, kind, body in rows:
            if (kind == "result" and body.get("work") in resets and body.get("status") == "done") \
                    or (kind == "notice" and body.get("what") == ENERGY_DAMAGED):
                high = {}      # the meter reported this fall itself
                continue
            regs = stored_registers(kind, body)
            if regs is None:
                continue
            for name, value in regs.items():
                top = high.get(name)
                if top is not None and value < top[1]:
                    out.append("epoch %s: %s fell from %r (seq %d) to %r (seq %d)"
                               % (epoch, name, top[1], top[0], value, seq))
                if top is None or value >= top[1]:
                    high[name] = (seq, value)
    return out


def check_registers_never_decrease(rig, device):
    """Every register value the head-end stored for device, over every stored reading and read
    result, never decreases within an outbox epoch. Returns how many values it checked."""
    items = rig.stored_items(device)
    resets = rig.work_ids(device, "reset_energy")
    bad = register_decreases(items, resets)
    check(not bad, "%s: registers went backwards at the head-end (%d times): %s"
          % (device, len(bad), "; ".join(bad[:5])))
    return sum(len(REGISTERS) for _, _, k, b in items if stored_registers(k, b))
