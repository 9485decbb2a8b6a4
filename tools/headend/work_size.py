"""How large a work item a meter can take: its transport's limit on one message the meter
receives (firmware/httpc.py MAX_BODY for an HTTP response, firmware/mqtt_wire.py MAX_PACKET
for an MQTT packet, firmware/mail_mime.py MAX_PAYLOAD for a mail's decoded payload,
firmware/xmpp_stanza.py MAX_STANZA for an XMPP stanza; host_tests/test_work_size.py checks
they agree). Work that could never fit is refused when it is queued (413); a response
carries only as much work as fits, so no message ever reaches a meter that it has to
refuse, again and again."""

from . import release_store, signing
from .db import loads

# XMPP: firmware/xmpp_stanza.py MAX_STANZA characters of stanza, the signed JSON inside as
# base64 (4/3 of it) with the message's own markup around it
LIMITS = {"http": 256 * 1024, "mqtt": 32 * 1024, "email": 44 * 1024,
          "xmpp": (40 * 1024 - 512) * 3 // 4}
# The rest of a message around its work items: the response's binding (v, dir, device, re,
# conn), epoch, ack, more, next and time, its signature (MQTT: "<sig> " before the JSON),
# MQTT's topic and packet id.
ENVELOPE = 1024
# A response to a firmware `fetch` also carries a chunk: base64 of up to CHUNK_MAX bytes
CHUNK = (release_store.CHUNK_MAX + 2) // 3 * 4 + 256


def limit(transport):
    """Bytes in one message to a meter on `transport`; the smallest while it is unknown
    (no exchange yet), as it may be either."""
    return LIMITS.get(transport, min(LIMITS.values()))


def budget(transport, fetch=False):
    """Bytes of work items one response may carry."""
    return limit(transport) - ENVELOPE - (CHUNK if fetch else 0)


def item_bytes(op, args, role, origin, expires, device="x" * 64):
    """The size `op` with `args` will have inside a response (workq.wire's dict, with a work
    id and seq of the greatest length, and its comma)."""
    item = {"id": "w-" + "9" * 15, "device": device, "seq": 2 ** 63 - 1, "op": op,
            "args": signing.canonical(args), "role": role, "from": origin,
            "expires": int(expires), "sig": "0" * 64}
    return len(signing.canonical(item).encode()) + 1


def row_bytes(row):
    """item_bytes() of a queued work row."""
    return item_bytes(row["op"], loads(row["args"]), row["role"], row["origin"],
                      row["expires"], row["device"])


def refusal(size, transport, device):
    """None if work of `size` bytes fits a message to `device`, else why not (one line)."""
    room = budget(transport)
    if size <= room:
        return None
    smallest = min(LIMITS, key=LIMITS.get)
    how = ("over %s" % transport) if transport in LIMITS else \
        "(transport not known yet: the smallest limit, %s's)" % smallest.upper()
    return ("work too large: %d bytes encoded, but %s takes at most %d bytes of work per "
            "message %s (%d with the envelope)" % (size, device, room, how, limit(transport)))


def group_transport(db, name):
    """The transport whose limit holds for every member of group `name`: "http" only when
    they all exchange over HTTP, else None (the smallest limit)."""
    rows = db.all("SELECT DISTINCT d.transport FROM group_members g JOIN devices d "
                  "ON d.id = g.device WHERE g.name = ?", name)
    kinds = set(r["transport"] for r in rows)
    return kinds.pop() if len(kinds) == 1 else None
