# A guarded change with fallback (issue 12, "What to build" 1): moving to a new head-end URL
# (`set_url`) or changing the encoding (`set_encoding`), by a utility only, through one
# mechanism (docs/protocol.md "Guarded changes").
#
# The config on flash keeps the old value; a trial record (one store record) holds the new
# one. After the op's result is out the meter restarts, and the next App runs with the new
# value. Its first healthy exchange (a signed, bound answer) writes the value to the config
# and ends the trial. No healthy exchange within `within_s` of a start, or MAX_STARTS starts
# without one (power cuts, resets): the record is removed, a notice says why, and the meter
# restarts on the old value. So a wrong URL, a certificate that does not chain to the pinned
# CA, a head-end that does not know the meter, or an encoding it cannot read, costs
# `within_s` and never the meter.

import json
import os

import config as configuration
import store
from mpshim import ticks_diff, ticks_ms

KEYS = ("server_url", "encoding")
MAX_STARTS = 3
INBOX = ".inbox"            # the trial's own work window, beside its record
WITHIN_S = (10, 86400)      # how long a start may try the new value


class Trial:
    def __init__(self, path):
        self.path = path
        self.record = None
        self.started = None     # ticks_ms of this App's start in a trial
        self.reverted = None    # why the last trial ended on the old value
        self.app = None         # its App: restarted when the trial ends (links.make_trial)
        self.main_inbox = None  # the meter's inbox path (links.make_trial)
        try:
            rec = json.loads(store.read_record(path) or b"null")
        except (ValueError, OSError):   # damaged: no trial (the config's value stands)
            rec = None
        if (isinstance(rec, dict) and rec.get("key") in KEYS and isinstance(rec.get("starts"), int)
                and isinstance(rec.get("within_s"), int)):
            self.record = rec

    def begin(self, cfg, key, value, within_s):
        """Check and save a trial of `key` = `value`; ValueError with the reason."""
        if key not in KEYS:
            raise ValueError("%s is not a guarded change" % (key,))
        if self.started is not None and self.record is not None:
            raise ValueError("a trial of %s is running: it ends first" % self.record["key"])
        if isinstance(within_s, bool) or not isinstance(within_s, int) or not (
                WITHIN_S[0] <= within_s <= WITHIN_S[1]):
            raise ValueError("within_s must be an int within %d..%d" % WITHIN_S)
        if cfg["transport"] != "http":
            raise ValueError("%s is tried over HTTP only (this meter uses %s)"
                             % (key, cfg["transport"]))
        if key == "server_url" and not (isinstance(value, str) and value.startswith("https://")):
            raise ValueError("server_url must be https:// (the new head-end's certificate "
                             "must chain to the pinned CA)")
        if value == cfg[key]:
            raise ValueError("%s is already %r" % (key, value))
        configuration.validate({key: value}, cfg)       # every rule the config has
        self._remove(self.path + INBOX)      # a new head-end: a work window of its own
        self.record = {"key": key, "value": value, "within_s": within_s, "starts": 0}
        store.write_record(self.path, json.dumps(self.record).encode())

    def apply(self, cfg):
        """At an App's start: cfg with the value on trial (a new dict), or cfg itself."""
        rec = self.record
        if rec is None:
            return cfg
        rec["starts"] += 1
        if rec["starts"] > MAX_STARTS:
            self.end("no healthy exchange in %d starts" % MAX_STARTS)
            return cfg
        store.write_record(self.path, json.dumps(rec).encode())
        self.started = ticks_ms()
        out = dict(cfg)
        out[rec["key"]] = rec["value"]
        return out

    def healthy(self, app):
        """After a good exchange: the value on trial becomes the config's."""
        if self.record is None or self.started is None or not app.comms.exchanges:
            return
        moved = self.record["key"] == "server_url"
        if moved:       # on flash first: once the record goes, a restart renames it (settle)
            app.inbox.save()
        if app.config_path:
            configuration.save(app.config_path, app.cfg)
        self.record = None
        self._remove(self.path)
        if moved:           # the new head-end's work window is the meter's from now on
            self.settle(app.inbox)

    def check(self, reading):
        """A watcher (App.watchers): past `within_s` without a healthy exchange, the trial
        ends and the meter restarts on the old value."""
        rec = self.record
        if rec is None or self.started is None:
            return ()
        if ticks_diff(ticks_ms(), self.started) < rec["within_s"] * 1000:
            return ()
        self.end("no healthy exchange within %d s" % rec["within_s"])
        self.app.reboot_now = True      # the next App starts on the config's value
        return ({"type": "notice", "what": self.reverted, "count": 1},)

    def inbox_path(self, inbox_path):
        """Where the inbox lives in this App: a head-end URL on trial has its own (the
        meter's work window is per head-end: each numbers its work from 1)."""
        on_trial = self.record is not None and self.record["key"] == "server_url"
        return self.path + INBOX if on_trial and self.started is not None else inbox_path

    def settle(self, inbox):
        """Make the trial's inbox the meter's (a move committed; also at start, when a power
        cut came between removing the record and this rename)."""
        try:
            os.rename(self.path + INBOX, self.main_inbox)
        except OSError:
            return False
        inbox.path = self.main_inbox
        return True

    def end(self, why):
        rec = self.record
        self.reverted = "trial of %s %r ended: %s; back on the old value" % (
            rec["key"], rec["value"], why)
        self.record = None
        self._remove(self.path + INBOX)     # first: a record left alone starts a fresh one
        self._remove(self.path)

    def _remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass
