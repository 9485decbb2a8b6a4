# Work ops: check signature, role, expiry and duplicates, run the op, queue its result.
#
# Every work item that reaches the meter gets exactly one result item in the outbox,
# except a duplicate (its seq already in the inbox window), which is listed in `done` and not
# run again. The signature covers every field with its type (envelope.work_message), and the
# seq enters the inbox before the op runs: a crash mid-op can never run it twice; the
# head-end then sees no result and reports the item expired.

import json

import config as configuration
import envelope
from clock import unix_ms

# No set_poll: the head-end owns the poll rate (every response's `next`, docs/protocol.md)
_OPERATOR = ("read", "get_config", "set_config", "relay", "set_presence", "get_events",
             "reboot", "message", "send", "get_messages", "update")
ROLE_OPS = {
    "operator": _OPERATOR,
    "utility": _OPERATOR + ("reset_energy", "set_time", "price", "shed", "tariff", "freeze",
                            "rotate_key", "set_url", "set_encoding"),
    # never relay, config, update or time from a peer (the head-end's rules deny by default)
    "peer": ("read", "get_events", "set_presence", "message"),
}


NEEDS_ROLE = ("set_config",)


class Rejected(Exception):
    """An op refused its arguments; the message is the reason sent back."""


def _args(args, name, kinds):
    if name not in args:
        raise Rejected("missing argument %r" % (name,))
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise Rejected("argument %r has the wrong type" % (name,))
    return value


def op_read(app, args):
    return app.status_reading()


# set_time corrects drift; a bigger step only comes from the head-end's signed, bound time
# (a response to this meter's own request, or the time refusal: docs/protocol.md)
MAX_SET_TIME_STEP_S = 300


def op_set_time(app, args):
    # "unix" as a decimal string (or an int) is exact on a float32 board; a float is not
    unix = _args(args, "unix", (int, float, str))
    target = unix_ms(unix)
    if target is None:
        raise Rejected("not a Unix time: %r" % (unix,))
    step = target // 1000 - app.clock.now()
    if not -MAX_SET_TIME_STEP_S <= step <= MAX_SET_TIME_STEP_S:
        raise Rejected("set_time may move the clock by at most %d s (asked %d s)"
                       % (MAX_SET_TIME_STEP_S, step))
    try:
        return {"offset_s": app.clock.set(unix)}
    except ValueError as exc:
        raise Rejected(str(exc))


def op_get_config(app, args):
    return app.public_config()


def op_set_config(app, args, role):
    changes = _args(args, "changes", dict)
    for name in changes:
        why = configuration.refusal(name, role)
        if why:
            raise Rejected(why)
    try:
        return app.change_config(changes, role)
    except ValueError as exc:
        raise Rejected(str(exc))


def op_relay(app, args):
    state = _args(args, "state", str)
    if state not in ("open", "closed"):
        raise Rejected("state must be open or closed")
    app.set_relay(state)
    return {"state": state}


def _expires(app, args):
    s = args.get("expires_s", 3600)
    if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 7 * 86400:
        raise Rejected("expires_s must be an int within 1..604800")
    return app.clock.now() + s


def op_price(app, args):
    """The utility's price signal for load shedding (shedding.py), until it expires."""
    price = _args(args, "price", (int, float))
    until = _expires(app, args)
    (app.protection.shedder or app.protection.load_shedder()).set_price(price, until)
    return {"price": price, "until": until}


def op_shed(app, args):
    """A utility override of load shedding: open, closed, or auto (ends one)."""
    state = _args(args, "state", str)
    if state not in ("open", "closed", "auto"):
        raise Rejected("state must be open, closed or auto")
    until = _expires(app, args)
    (app.protection.shedder or app.protection.load_shedder()).set_override(state, until)
    return {"state": state, "until": until}


def op_tariff(app, args):
    """A tariff in UTC switch times (the head-end's compile of the utility's local one)."""
    try:
        return app.billing_on().set_tariff(args)
    except ValueError as exc:
        raise Rejected(str(exc))


def op_freeze(app, args):
    """A billing freeze on demand: a snapshot of every register, sent as a billing item."""
    snap = app.billing_on().freeze(app.clock.now_ms(), "utility")
    return {"id": snap["id"]}


def op_set_presence(app, args):
    state = _args(args, "state", str)
    try:
        app.presence.set(state, args.get("note", ""))
    except ValueError as exc:
        raise Rejected(str(exc))
    return {"state": state}


def op_get_events(app, args):
    limit = args.get("limit", 20)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise Rejected("limit must be a non-negative int")
    return {"events": app.recent_events[-limit:] if limit else []}


def op_reboot(app, args):
    app.reboot_requested = True
    return {}


def op_reset_energy(app, args):
    return {"before": app.reset_energy()}


def op_message(app, args):
    app.received_message(args)
    return {}


def op_send(app, args):
    """Have this meter send work to another meter through the head-end (rendezvous)."""
    to = _args(args, "to", str)
    op = _args(args, "op", str)
    work_args = args.get("args", {})
    if not isinstance(work_args, dict):
        raise Rejected("args must be an object")
    ref = args.get("ref") or "%s-%d" % (op, app.clock.now())
    if app.outbox.offer("send", {"to": to, "ref": ref, "op": op, "args": work_args}) is None:
        raise Rejected("outbox full")
    return {"ref": ref}


def op_get_messages(app, args):
    return {"messages": list(app.messages)}


def op_update(app, args):
    """Check a signed release (docs/ota.md); the download then rides on the exchanges."""
    from fw_manifest import Refused

    manifest = _args(args, "manifest", str)
    sig = _args(args, "sig", str)
    try:
        return app.updater.start(manifest, sig)
    except Refused as exc:
        raise Rejected(str(exc))


def op_rotate_key(app, args):
    """A guarded key rotation (rekey.py): our ECDH public key for the head-end's."""
    rid = _args(args, "rid", str)
    pub = _args(args, "pub", str)
    try:
        return {"pub": app.rekey.start(rid, pub)}
    except ValueError as exc:
        raise Rejected(str(exc))


def _guarded(app, key, value, args):
    """A guarded change with fallback (trial.py): tried after a restart, kept only after a
    healthy exchange with it, else undone."""
    within_s = args.get("within_s", 600)
    try:
        app.trial.begin(app.cfg, key, value, within_s)
    except ValueError as exc:
        raise Rejected(str(exc))
    app.reboot_requested = True     # once this result is out: the trial starts
    return {"trial": key, "value": value, "within_s": within_s}


def op_set_url(app, args):
    return _guarded(app, "server_url", _args(args, "url", str), args)


def op_set_encoding(app, args):
    return _guarded(app, "encoding", _args(args, "encoding", str), args)


OPS = {
    "read": op_read, "set_time": op_set_time, "get_config": op_get_config,
    "set_config": op_set_config, "relay": op_relay, "price": op_price, "shed": op_shed,
    "tariff": op_tariff, "freeze": op_freeze,
    "set_presence": op_set_presence, "get_events": op_get_events, "reboot": op_reboot,
    "reset_energy": op_reset_energy, "message": op_message, "send": op_send,
    "get_messages": op_get_messages, "update": op_update, "rotate_key": op_rotate_key,
    "set_url": op_set_url, "set_encoding": op_set_encoding,
}


class Dispatcher:
    def __init__(self, app, key, outbox, inbox, room=4, device_id=None):
        self.app = app
        self.key = key
        self.rekey = None   # a key rotation in flight: work under either key (rekey.py)
        self.outbox = outbox
        self.inbox = inbox
        self.device_id = device_id if device_id is not None else app.cfg["device_id"]
        self.max_room = room
        self.busy = 0
        self.counts = {"done": 0, "rejected": 0, "unknown_op": 0, "expired": 0, "duplicate": 0}

    def room(self):
        """How much new work to ask for: none while an op runs or while the outbox is too
        full to be sure of keeping the results."""
        if self.outbox.bytes_used() > 0.9 * self.outbox.max_bytes:
            return 0
        return max(0, self.max_room - self.busy)

    def handle(self, item):
        """Run one work item from a response. Returns the result status. Never raises: an
        item that cannot be processed (args too deep or too large for the heap, fields of
        the wrong kind) gets a `rejected` result, or the exchange would fail and the head-end
        deliver the same item again and again (a wedged meter)."""
        try:
            return self._handle(item)
        except Exception as exc:  # MemoryError, RecursionError, TypeError...
            # the result ends the work at the head-end: it is not delivered again
            wid = item.get("id") if isinstance(item, dict) else None
            return self._result(wid if isinstance(wid, str) else None, "rejected",
                                "cannot process this item: %s" % (type(exc).__name__,))

    def _handle(self, item):
        wid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(wid, str):
            return self._result(None, "rejected", "work item without an id")
        # every field with its type is signed (envelope.WORK_FIELDS): a missing, extra or
        # retyped field (say `expires` as a string) fails here
        keys = (self.key,) if self.rekey is None else self.rekey.keys(self.key)
        if not any(envelope.work_ok(k, item) for k in keys):
            return self._result(wid, "rejected", "bad signature")
        if item["device"] != self.device_id:
            return self._result(wid, "rejected", "work for device %r" % (item["device"],))
        seq = item["seq"]
        seen = self.inbox.check(seq)
        if seen == "duplicate":
            self.counts["duplicate"] += 1
            self.inbox.relist(wid)
            return "duplicate"
        if seen == "stale":   # older than the window: it may have run; never run it again
            self.inbox.relist(wid)
            return self._result(wid, "rejected", "work seq %d is older than this meter's "
                                "window (highest run %d)" % (seq, self.inbox.hi))
        self.inbox.add(wid, seq)
        op = item["op"]
        role = item.get("role")
        if item["expires"] < self.app.clock.now():
            return self._result(wid, "expired", "arrived after it expired")
        if op not in OPS:
            return self._result(wid, "unknown_op", "no op %r on this meter" % (op,))
        if op not in ROLE_OPS.get(role, ()):
            return self._result(wid, "rejected", "role %r may not run %s" % (role, op))
        try:
            args = json.loads(item["args"])
        except ValueError:
            args = None
        except Exception as exc:  # nested too deep for the stack or the heap
            return self._result(wid, "rejected", "args cannot be parsed here: %s"
                                % (type(exc).__name__,))
        if not isinstance(args, dict):
            return self._result(wid, "rejected", "args must be a JSON object")
        self.busy += 1
        try:
            if op in NEEDS_ROLE:    # what these may do depends on who asks
                body = OPS[op](self.app, args, role)
            else:
                body = OPS[op](self.app, args)
        except Rejected as exc:
            return self._result(wid, "rejected", str(exc))
        except Exception as exc:  # an op must never take the meter down
            return self._result(wid, "rejected", "%s: %s" % (type(exc).__name__, exc))
        finally:
            self.busy -= 1
        return self._result(wid, "done", None, body)

    def _result(self, wid, status, reason, body=None):
        self.counts[status] += 1
        result = {"work": wid, "status": status}
        if reason:
            result["reason"] = reason
        if body is not None:
            result["body"] = body
        if wid is not None:
            self.outbox.offer("result", result)
        return status
