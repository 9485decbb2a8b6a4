"""Tariff horizons renewed by the head-end (docs/billing.md): the meter holds UTC switch
times up to `until` only (after it the last rate holds), so the head-end keeps each meter's
local-time tariff (table `tariffs`, stored when POST /v1/devices/{id}/tariff queues it) and,
when a horizon has less than RENEW_BEFORE_S (or a third of it) left, compiles the same tariff
again from now for the same number of days and queues op `tariff` as the utility token that
set it (the same id and rates carry the meter's per-rate registers over). The leader's sweep
(webapp.sweep) calls tick() every sweep interval; a renewal whose work expired or was refused
is queued again at the next tick."""

import json
import logging

from . import operator_actions
from . import tariff as tariffs
from .auth import Principal

log = logging.getLogger("backchannel")

RENEW_BEFORE_S = 7 * 86400
OPEN = ("queued", "delivered")
FAILED = ("rejected", "unknown_op", "expired", "cancelled")


def remember(db, device_id, spec, days, args, who, work_id):
    """The tariff just queued for a meter: what tick() renews."""
    until = args["t0"] + args["end"]
    db.run("DELETE FROM tariffs WHERE device = ?", device_id)
    db.run("INSERT INTO tariffs(device, spec, days, until, set_by, work) "
           "VALUES (?, ?, ?, ?, ?, ?)", device_id, json.dumps(spec), days, until, who.name,
           work_id)


def due(row, now):
    """Does this meter's horizon need renewing at `now`?"""
    margin = min(RENEW_BEFORE_S, row["days"] * 86400 // 3)
    return row["until"] - now <= margin


def needed(hub, row, now):
    """Is a renewal to be queued for this row: its last work is neither on its way nor done
    with time to spare (failed, or the horizon is due)?"""
    work = None
    if row["work"] is not None:
        work = hub.db.one("SELECT status FROM work WHERE num = ?", row["work"])
    if work is not None and work["status"] in OPEN:
        return False                  # the last one (set or renewal) is still on its way
    failed = work is not None and work["status"] in FAILED
    return failed or due(row, now)


def tick(hub, now):
    """Renew every horizon that is due; returns the work ids queued."""
    queued = []
    for row in hub.db.all("SELECT * FROM tariffs ORDER BY device"):
        if not needed(hub, row, now):
            continue
        # locked, then read again: a second tick (a new leader's first, or a test's beside
        # the sweep) or a tariff set meanwhile waits for this one and then sees its renewal
        hub.db.lock_device(row["device"])
        row = hub.db.one("SELECT * FROM tariffs WHERE device = ?", row["device"])
        if row is None or not needed(hub, row, now):
            continue
        start = int(now)
        try:
            args = tariffs.compile_tariff(json.loads(row["spec"]), start, row["days"])
            who = Principal(row["set_by"], "utility")
            work = operator_actions.queue(hub, who, row["device"], "tariff", args, "renew",
                                          expires_in=max(3600, int(row["until"] - now)))
        except (tariffs.TariffError, operator_actions.ActionRefused) as e:
            log.warning("tariff renewal for %s refused: %s", row["device"], e)
            continue
        hub.db.run("UPDATE tariffs SET until = ?, work = ? WHERE device = ?",
                   args["t0"] + args["end"], work["num"], row["device"])
        queued.append(work["num"])
    return queued
