# The exchange in JSON, the default encoding (docs/protocol.md). Each encoding module has the
# same three names: CONTENT_TYPE, encode(request dict) -> bytes, decode(response bytes) ->
# dict (ValueError when the body spells none). A meter imports only its own (comms.codec).

import json

CONTENT_TYPE = "application/json"


def encode(body):
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data):
    try:
        value = json.loads(data)
    except ValueError:
        raise ValueError("malformed JSON")
    if not isinstance(value, dict):
        raise ValueError("response is not a JSON object")
    return value
