# firmware/trial.py (a guarded change with fallback) under each interpreter, for
# host_tests/test_trial.py. argv[1]: a scratch directory. Prints one JSON document of what
# happened at each step.

import json
import os
import sys

import config
import store
import trial
from inbox import Inbox
from mpshim import ticks_add, ticks_ms


class App:
    def __init__(self, cfg, d):
        self.cfg = cfg
        self.config_path = d + "/config.json"
        self.inbox = Inbox(d + "/trial.inbox")
        self.comms = self
        self.exchanges = 0
        self.reboot_now = False


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def error(fn, *args):
    try:
        fn(*args)
    except ValueError as e:
        return "ValueError: %s" % e
    except Exception as e:  # noqa: BLE001 - the test rejects anything else
        return "raised %s: %s" % (type(e).__name__, e)
    return None


def main():
    d = sys.argv[1]
    out = {}
    cfg = config.validate({"server_url": "https://old.example:8443", "transport": "http"})
    t = trial.Trial(d + "/trial")
    out["errors"] = [error(t.begin, cfg, "server_url", "http://new.example", 60),
                     error(t.begin, cfg, "server_url", "https://old.example:8443", 60),
                     error(t.begin, cfg, "server_url", "https://new.example", 5),
                     error(t.begin, cfg, "server_url", "https://new.example", True),
                     error(t.begin, cfg, "encoding", "yaml", 60),
                     error(t.begin, cfg, "device_key", "00" * 16, 60),
                     error(t.begin, dict(cfg, transport="mqtt"), "encoding", "xml", 60)]
    out["nothing_saved"] = trial.Trial(d + "/trial").record is None
    # a move: saved, then each start counts; the fourth start ends it
    t.begin(cfg, "server_url", "https://new.example:8443", 60)
    starts = []
    for _ in range(4):
        t = trial.Trial(d + "/trial")
        starts.append(t.apply(cfg)["server_url"])
    out["starts"] = starts
    out["ended"] = [t.record, t.reverted]
    # within_s passes without a healthy exchange: the watcher ends it and asks for a restart
    t = trial.Trial(d + "/trial")
    t.begin(cfg, "encoding", "xml", 10)
    t = trial.Trial(d + "/trial")
    app = App(t.apply(cfg), d)
    t.app = app
    out["early"] = list(t.check({}))
    t.started = ticks_add(ticks_ms(), -11000)
    out["late"] = list(t.check({}))
    out["late_restart"] = app.reboot_now
    out["late_record"] = trial.Trial(d + "/trial").record
    # a healthy exchange keeps a move, and the trial's work window becomes the meter's
    with open(d + "/inbox", "wb") as f:
        f.write(b"")                    # the old head-end's window (damaged: never read)
    t = trial.Trial(d + "/trial")
    t.main_inbox = d + "/inbox"
    t.begin(cfg, "server_url", "https://new.example:8443", 60)
    t = trial.Trial(d + "/trial")
    t.main_inbox = d + "/inbox"
    live = t.apply(cfg)
    out["trial_inbox"] = t.inbox_path(d + "/inbox")
    app = App(live, d)
    app.inbox.add("w-00000001", 1)      # the new head-end's first work item
    t.healthy(app)                      # no exchange yet: nothing kept
    out["before_exchange"] = trial.Trial(d + "/trial").record is not None
    app.exchanges = 1
    t.healthy(app)
    out["kept_url"] = config.load(d + "/config.json")["server_url"]
    out["after"] = [trial.Trial(d + "/trial").record, app.inbox.path == d + "/inbox",
                    Inbox(d + "/inbox").check(1)]
    # a power cut right after the record went, before the rename, with no work from the new
    # head-end yet: its window (empty) must still replace the old head-end's at the next start
    store.write_record(d + "/inbox", b'{"hi":5,"mask":31,"pending":[]}')
    t = trial.Trial(d + "/trial")
    t.begin(cfg, "server_url", "https://other.example:8443", 60)
    t = trial.Trial(d + "/trial")
    t.main_inbox = d + "/inbox"
    app = App(t.apply(cfg), d)
    app.exchanges = 1
    t.settle = lambda inbox: False      # the power cut
    order = []
    save = app.inbox.save

    def saved():                        # the window must be on flash while the record is
        order.append(exists(d + "/trial"))
        save()

    app.inbox.save = saved
    t.healthy(app)
    out["inbox_saved_while_record"] = order
    t = trial.Trial(d + "/trial")
    t.main_inbox = d + "/inbox"
    out["cut_before_rename"] = [t.settle(Inbox(d + "/inbox")), Inbox(d + "/inbox").check(1)]
    # a power cut between removing the record and the rename: settled at the next start
    store.write_record(d + "/trial.inbox", b'{"hi":7,"mask":0,"pending":[]}')
    t = trial.Trial(d + "/trial")
    t.main_inbox = d + "/inbox"
    inbox = Inbox(d + "/inbox")
    out["settled"] = [t.settle(inbox), Inbox(d + "/inbox").hi,
                      "trial.inbox" in os.listdir(d)]
    # a damaged record: no trial
    with open(d + "/trial", "wb") as f:
        f.write(b"BC1junk")
    out["damaged"] = trial.Trial(d + "/trial").record
    print(json.dumps(out))


main()
