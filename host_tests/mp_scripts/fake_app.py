# A meter app without hardware, for running ops and answers through the real
# ops.Dispatcher and comms: the fuzz harness (fuzz_parsers.py, fuzz_guarded.py), the rekey
# checks and the tests that drive the dispatcher directly. CPython and MicroPython.

import json

import config

KEY = b"0123456789abcdef0123456789abcdef"
DEVICE = "meter-f"


class FakeClock:
    def __init__(self):
        self.t = 1763769600.0

    def now(self):
        return self.t

    def set(self, unix):
        before = self.t
        self.t = unix
        return unix - before

    def server_time(self, unix, tolerance=2.0, exact_ms=None, transit_ms=0):
        if abs(unix - self.t) > tolerance:
            self.set(unix)


class FakeOutbox:
    max_bytes = 65536
    epoch = "0123456789abcdef"

    def __init__(self):
        self.items = []
        self.acked = 0

    def offer(self, kind, body):
        json.dumps(body)            # what the real outbox does with it: must serialise
        self.items.append((kind, body))
        return len(self.items)

    def bytes_used(self):
        return 0

    def ack(self, seq):
        seq = min(seq, len(self.items))
        if seq > self.acked:
            self.acked = seq

    def depth(self):
        return len(self.items) - self.acked


class FakeInbox:
    def __init__(self):
        self.ids = []
        self.seqs = []
        self.hi = 0

    def check(self, seq):
        return "duplicate" if seq in self.seqs else "new"

    def add(self, wid, seq):
        self.ids.append(wid)
        self.seqs.append(seq)

    def relist(self, wid):
        pass


class FakePresence:
    def set(self, state, note=""):
        if state not in ("available", "available_restricted", "active", "available_off",
                         "unavailable"):
            raise ValueError("presence must be one of ...")
        if not isinstance(note, str) or len(note) > 200:
            raise ValueError("note must be text of at most 200 characters")


class FakeComms:
    poll_s = 0


class FakeApp:
    def __init__(self, outbox):
        self.clock = FakeClock()
        self.outbox = outbox
        self.comms = FakeComms()
        self.presence = FakePresence()
        self.recent_events = [{"kind": "dip"}] * 3
        self.messages = []
        self.cfg = dict(config.DEFAULTS, device_id=DEVICE)
        self.reboot_requested = False

    def status_reading(self):
        return {"vrms": 230.0}

    def public_config(self):
        return config.public(self.cfg)

    def change_config(self, changes, by="console"):
        self.cfg = config.validate(changes, self.cfg)
        return {"config": config.public(self.cfg)}

    def set_relay(self, state):
        self.relay = state

    def reset_energy(self):
        return {"import_wh": 1.0}

    def received_message(self, args):
        self.messages.append(args)
        self.messages = self.messages[-16:]
