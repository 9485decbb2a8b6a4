# The exchange in JSON, the default encoding (docs/protocol.md). Each encoding module has the
# same four names: CONTENT_TYPE, encode(request dict) -> bytes, parts(request dict whose
# items are the outbox's JSON payloads) -> the same bytes in pieces, and decode(response
# bytes) -> dict (ValueError when the body spells none). A meter imports only its own
# (comms.codec).

import json

CONTENT_TYPE = "application/json"


def encode(body):
    return json.dumps(body, separators=(",", ":")).encode()


def parts(body):
    """encode(body) as a list of bytes pieces, body["items"] being the outbox's records as
    they are stored (JSON bytes, outbox.peek_raw): spliced in, never parsed, so a backlog
    costs the heap its bytes once, in pieces a fragmented heap still has room for. The
    pieces are made in that same list (each record is freed as its piece is made)."""
    items = body.get("items")
    if not items:
        return [encode(body)]
    rest = {}
    for k in body:
        if k != "items":
            rest[k] = body[k]
    head = encode(rest)[:-1]    # without its closing brace
    items[0] = head + (b',"items":[' if len(head) > 1 else b'"items":[') + items[0]
    for i in range(1, len(items)):
        items[i] = b"," + items[i]
    items.append(b"]}")
    return items


def decode(data):
    try:
        value = json.loads(data)
    except ValueError:
        raise ValueError("malformed JSON")
    if not isinstance(value, dict):
        raise ValueError("response is not a JSON object")
    return value
