"""Signed MQTT presence (docs/protocol.md "Signed presence"): which messages on
`bc/<id>/presence` the bridge believes.

The broker login alone (its password is derived from the key, but travels to the broker)
must not be enough to state a meter's presence: `available` releases work held with
`when_available`. A presence message is JSON with `state`, `note`, `device`, `conn` (the
meter's random nonce for this MQTT connection), `n` (0 for the Last Will, then 1, 2, ... per
statement on that connection) and `sig`, the HMAC over presence_message(). A message counts
only if its signature holds, it names the topic's device, and it belongs to the meter's
current connection (the `conn` of its latest verified up): a statement that arrives before
that up waits for it, an old connection's statement or Will is dropped, and within a
connection each `n` counts once. The last (conn, n) taken per device is also kept in the
database (table presence_seen, written in the transaction that records the statement), so a
head-end restart forgets nothing: a statement replayed after it is dropped as before."""

import json

from . import signing

WILL_N = 0
SEEN_TABLE = """
CREATE TABLE IF NOT EXISTS presence_seen (   -- the last signed presence taken (mqtt_presence.py)
    device TEXT PRIMARY KEY, conn TEXT NOT NULL, n INTEGER NOT NULL
);
"""
SAVE_SEEN = ("INSERT INTO presence_seen(device, conn, n) VALUES (?, ?, ?) ON CONFLICT (device) "
             "DO UPDATE SET conn = excluded.conn, n = excluded.n")


def seen_in(db):
    """The gate's `seen` over a database."""
    def seen(device):
        row = db.one("SELECT conn, n FROM presence_seen WHERE device = ?", device)
        return (row["conn"], row["n"]) if row is not None else None
    return seen


def presence_message(device, conn, n, state, note):
    def typed(v):
        if isinstance(v, str):
            data = v.encode()
            return b"s%d:" % len(data) + data
        return b"i%d" % v
    return b"|".join((b"bc-presence-2", typed(device), typed(conn), typed(n), typed(state),
                      typed(note)))


def sign_presence(key_hex, device, conn, n, state, note=""):
    """The payload a meter publishes (used by the tests' fake meters)."""
    sig = signing.sign(key_hex, presence_message(device, conn, n, state, note))
    return json.dumps({"state": state, "note": note, "device": device, "conn": conn,
                       "n": n, "sig": sig}).encode()


def verified(body, device, key_hex):
    """(conn, n, state, note) of a correctly signed message for `device`, else None."""
    if not isinstance(body, dict) or body.get("device") != device:
        return None
    conn, n, state, note = body.get("conn"), body.get("n"), body.get("state"), body.get("note")
    if not (isinstance(conn, str) and isinstance(state, str) and isinstance(note, str)
            and isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 53
            and 0 < len(conn) <= 64):
        return None
    sig = body.get("sig")
    if not signing.verify(key_hex, presence_message(device, conn, n, state, note), sig):
        return None
    return conn, n, state, note


class PresenceGate:
    """Per device: the last (conn, n) taken, a statement waiting for its connection's up,
    and connections whose Will was taken (dead: nothing of theirs counts again)."""

    def __init__(self, seen=None, fresh=False):
        """seen(device): the durable last (conn, n) taken, or None (SEEN_TABLE). fresh: read
        it for every message (several processes share the meters' messages: another one
        may have taken a statement since)."""
        self.last = {}
        self.waiting = {}
        self.dead = {}
        self.seen = seen
        self.fresh = fresh

    def _recall(self, device):
        if self.seen is None or (device in self.last and not self.fresh):
            return
        rec = self.seen(device)
        if rec is not None:
            self.last[device] = rec
            if rec[1] == WILL_N:
                self.dead[device] = rec[0]

    def offer(self, device, current_conn, msg):
        """msg from verified(). Returns "take" (record it now), "wait" (held until an up on
        its connection), or a reason it is dropped."""
        self._recall(device)
        conn, n, _, _ = msg
        if self.dead.get(device) == conn:
            return "its connection has ended"
        last = self.last.get(device)
        if n != WILL_N and last is not None and last[0] == conn and n <= last[1]:
            return "already seen"
        if conn != current_conn:
            if n == WILL_N:
                return "the Will of another connection"
            waiting = self.waiting.get(device)
            if waiting is None or waiting[0] != conn or waiting[1] < n:
                self.waiting[device] = msg
            return "wait"
        self.taken(device, msg)
        return "take"

    def taken(self, device, msg):
        self.last[device] = (msg[0], msg[1])
        if msg[1] == WILL_N:
            self.dead[device] = msg[0]
            self.waiting.pop(device, None)

    def up(self, device, conn):
        """A verified up on connection conn: the statement waiting for it, if any."""
        waiting = self.waiting.get(device)
        if waiting is None or waiting[0] != conn:
            return None
        self._recall(device)
        del self.waiting[device]
        last = self.last.get(device)
        if last is not None and last[0] == conn and waiting[1] <= last[1]:
            return None
        self.taken(device, waiting)
        return waiting
