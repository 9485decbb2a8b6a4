# The running meter's config: what follows from it (the readings the outbox holds in RAM, the
# long-poll's length), and a change made while it runs (the `config` op, bc.set at the
# console): validated, saved, then applied to the running App. Keys outside LIVE take effect
# at the next start.

import config as configuration
import metering
from protection import LIVE_KEYS

HOLD_MAX = 16       # readings held in RAM at most (a few KB)
LIVE = ("report_s", "poll_wait_s", "update_key") + LIVE_KEYS


def outbox_hold(cfg):
    """Readings the outbox holds in RAM before one append writes them (outbox.py): persist_s
    of them, so a power cut loses no more than persist_s of readings the head-end had not
    stored yet (a clean stop writes them)."""
    return min(HOLD_MAX, max(1, cfg["persist_s"] // cfg["report_s"]))


def poll_wait_s(cfg):
    """A long-poll never outlasts the reporting interval, so readings go out on time."""
    return min(cfg["poll_wait_s"], cfg["report_s"])


def change(app, changes, by):
    """Apply `changes` (a dict) to the running App; what the op answers. ValueError (from
    config.validate or metering.check_sampling) leaves everything as it was."""
    new = configuration.validate(changes, app.cfg)
    metering.check_sampling(new, app.board)  # e.g. a harmonic order the rate cannot give
    if app.config_path:
        configuration.save(app.config_path, new)
    old, app.cfg = app.cfg, new
    # a change to what the bill depends on is recorded with who (utility, operator,
    # console) and each key's old and new value
    moved = configuration.utility_changes(old, new, changes)
    if moved:
        app.outbox.offer("notice", {"what": "utility config changed", "count": 1,
                                    "by": by, "changes": moved})
    app.outbox.hold = outbox_hold(new)
    if app.comms is not None:
        app.comms.wait_s = poll_wait_s(new)
    app.protection.configure(new, changes)
    return {"config": configuration.public(new),
            "restart_needed": [k for k in changes if k not in LIVE]}
