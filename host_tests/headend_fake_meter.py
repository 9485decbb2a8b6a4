"""A CPython fake meter for the head-end tests. It signs and checks everything per
docs/protocol.md on its own (no head-end code): an outbox with a persisted-style seq that
drops items only when acked, `done`, an inbox of executed ids, and signature checks on the
response body and on every work item."""

import hashlib
import hmac
import json
import secrets
import time


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hmac_hex(key_hex, data):
    return hmac.new(bytes.fromhex(key_hex), data, hashlib.sha256).hexdigest()


WORK_FIELDS = (("id", str), ("device", str), ("seq", int), ("op", str), ("role", str),
              ("from", str), ("expires", int), ("args", str))


def work_message(w):
    """v2: every field with its type, length-prefixed (docs/protocol.md "Work")."""
    assert set(w) - {"sig"} == {n for n, _ in WORK_FIELDS}, "work fields: %s" % sorted(w)
    parts = [b"bc-work-2"]
    for name, kind in WORK_FIELDS:
        value = w[name]
        assert type(value) is kind, "work field %s is %r" % (name, value)
        if kind is str:
            data = value.encode()
            parts.append(b"s%d:" % len(data) + data)
        else:
            parts.append(b"i%d" % value)
    return b"|".join(parts)


def work_sig(key_hex, w):
    # `args` travels as canonical JSON text and the signature covers that text as sent
    assert isinstance(w["args"], str), "work args must be JSON text on the wire"
    return hmac_hex(key_hex, work_message(w))


def bound(body, device, nonce=None, conn=None):
    """A v2 response: head-end to meter, for this device, answering `nonce` or pushed on the
    connection `conn`."""
    if body.get("v") != 2 or body.get("dir") != "down" or body.get("device") != device:
        return False
    if body.get("re") is not None:
        return body["re"] == nonce
    return conn is not None and body.get("conn") == conn


class ExchangeError(AssertionError):
    def __init__(self, response):
        super().__init__("exchange failed: %d %s" % (response.status_code, response.text))
        self.response = response


class FakeMeter:
    def __init__(self, http, device, key, first_seq=1, epoch=None):
        self.http = http            # httpx.Client or fastapi TestClient
        self.device = device
        self.key = key
        self.next_seq = first_seq
        self.outbox = []            # unacked items, oldest first
        self.done = []              # executed work ids to report
        self.inbox = set()          # every work id ever executed
        self.last = None            # the last response body
        self.epoch = epoch or secrets.token_hex(8)   # this outbox's life (v2)

    # --- outbox ---
    def add(self, kind, body):
        item = {"seq": self.next_seq, "kind": kind, "body": body}
        self.next_seq += 1
        self.outbox.append(item)
        return item["seq"]

    def reading(self, vrms=230.0):
        return self.add("reading", {"t": time.time(), "vrms": vrms, "p": 100.0})

    def presence(self, state, note=None):
        body = {"state": state}
        if note:
            body["note"] = note
        return self.add("presence", body)

    def result(self, work_id, status="done", body=None, reason=None):
        res = {"work": work_id, "status": status, "body": body or {}}
        if reason:
            res["reason"] = reason
        return self.add("result", res)

    # --- wire ---
    def envelope(self, wait=0, room=4, items=None, done=None, ts=None, nonce=None):
        return {"v": 2, "device": self.device, "epoch": self.epoch,
                "ts": time.time() if ts is None else ts,
                "nonce": nonce or secrets.token_hex(8), "wait": wait, "room": room,
                "done": list(self.done if done is None else done),
                "items": list(self.outbox if items is None else items)}

    def post(self, body, sig=None, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if sig is not False:
            headers["X-BC-Signature"] = sig or hmac_hex(self.key, data)
        return self.http.post("/v1/exchange", content=data, headers=headers)

    def exchange(self, wait=0, room=4, **kw):
        """One signed exchange; checks signatures, drops acked items, returns the body."""
        env = self.envelope(wait=wait, room=room, **kw)
        r = self.post(env)
        if r.status_code != 200:
            raise ExchangeError(r)
        assert hmac.compare_digest(r.headers["x-bc-signature"], hmac_hex(self.key, r.content))
        body = r.json()
        assert bound(body, self.device, env["nonce"]), "response not bound to the request"
        for w in body["work"]:
            assert w["sig"] == work_sig(self.key, w), "bad work signature"
            w["args"] = json.loads(w["args"])
        self.outbox = [i for i in self.outbox if i["seq"] > body["ack"]]
        self.done = []
        self.last = body
        return body

    def execute(self, work, handler=None):
        """Run work items once each (inbox dedupe); queue results and `done`."""
        for w in work:
            if w["id"] in self.inbox:
                self.done.append(w["id"])
                continue
            self.inbox.add(w["id"])
            status, body = handler(w) if handler else ("done", {"op": w["op"]})
            self.result(w["id"], status, body)
            self.done.append(w["id"])
