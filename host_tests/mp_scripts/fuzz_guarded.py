# The guarded ops' parsers under fuzz (issue 12, "Bad input"): `rotate_key` (rekey.py) with
# any arguments, then any answer's `rekey` directive; `set_url` and `set_encoding`
# (trial.py) with any arguments. Each through the real Dispatcher, signed as a utility's
# work: a result of a known status, never an exception; a rotation that is `done` answered
# a point on P-256 and holds both keys; a trial that is `done` saved a value its config
# accepts; a replay is not run again. For fuzz_parsers.run_case ("guarded").

import json
import os

import config
import envelope
import ops
import p256
import rekey
import trial

ALLOWED = ()
OPS = ("rotate_key", "set_url", "set_encoding")


def _clear(tmp):
    for name in ("rekey", "trial", "trial.inbox"):
        try:
            os.remove(tmp + "/g-" + name)
        except OSError:
            pass


def run(case, tmp):
    import fuzz_parsers as fz  # here: it imports this module

    op, args, answer = case
    _clear(tmp)
    outbox = fz.FakeOutbox()
    app = fz.FakeApp(outbox)
    app.cfg = dict(app.cfg, transport="http", server_url="https://old.example:8443")
    app.rekey = rekey.Rekey(tmp + "/g-rekey", fz.DEVICE)
    app.trial = trial.Trial(tmp + "/g-trial")
    d = ops.Dispatcher(app, fz.KEY, outbox, fz.FakeInbox())
    d.rekey = app.rekey
    try:
        text = json.dumps(args)
    except (TypeError, ValueError):
        return
    item = {"id": "w-1", "device": fz.DEVICE, "seq": 1, "op": op if op in OPS else "rotate_key",
            "role": "utility", "expires": 2 * 10 ** 9, "from": "operator:u", "args": text}
    item["sig"] = envelope.sign(fz.KEY, envelope.work_message(item))
    status = d.handle(item)
    if status not in fz.STATUSES:
        raise fz.Crash("status %r" % (status,))
    result = outbox.items[-1][1]
    if d.handle(item) != "duplicate" or outbox.items[-1][1] is not result:
        raise fz.Crash("a replayed guarded op ran again")
    if item["op"] == "rotate_key":
        if status == "done":
            p256.public_key_from_hex(result["body"]["pub"])     # ValueError: a crash here
            if len(app.rekey.keys(fz.KEY)) != 2:
                raise fz.Crash("a done rotation holds %d keys" % len(app.rekey.keys(fz.KEY)))
        elif app.rekey.pending is not None:
            raise fz.Crash("a refused rotation left a new key")
        new = app.rekey.new_key()
        for used in (fz.KEY, new):
            app.rekey.answered(answer if isinstance(answer, dict) else {}, used, fz.KEY)
        keys = app.rekey.keys(fz.KEY)
        if keys[0] != fz.KEY or len(keys) > 2:
            raise fz.Crash("keys after an answer: %r" % (keys,))
        if new is not None and app.rekey.pending is not None:
            raise fz.Crash("an answer under the new key did not end the rotation")
    elif status == "done":
        rec = trial.Trial(tmp + "/g-trial").record
        if rec is None or not app.reboot_requested:
            raise fz.Crash("a done trial saved nothing or asked for no restart")
        config.validate({rec["key"]: rec["value"]}, app.cfg)    # ConfigError: a crash here
    elif trial.Trial(tmp + "/g-trial").record is not None:
        raise fz.Crash("a refused trial was saved")
