# The WBXML 1.3 tokens of the exchange (docs/protocol.md "WBXML"): the one table both ends
# use. The meter reads it as firmware/wbxml_tokens.py (enc_wbxml.py), the head-end as
# tools/headend/wbxml_tokens.py, a link to this file (tools/headend/wbxml.py). New names are
# appended to a page, never inserted: a token once sent keeps its meaning.

VERSION = 0x03          # WBXML 1.3
PUBLIC_ID = 0x01        # unknown (the content type says what it is)
UTF8 = 106              # IANA MIBenum

SWITCH_PAGE = 0x00
END = 0x01
STR_I = 0x03
LITERAL = 0x04
STR_T = 0x83
FIRST_TAG = 0x05

# Tag code pages: token 0x05 + index. Page 0: the envelope, work and outbox items; page 1:
# readings, events and results. Any other name travels as LITERAL with its name in the table.
PAGES = (
    ("request", "response", "v", "device", "epoch", "ts", "nonce", "conn", "wait", "room",
     "done", "items", "e", "seq", "kind", "body", "fetch", "dir", "re", "ack", "work", "id",
     "op", "args", "role", "from", "expires", "sig", "more", "next", "time", "time_ms",
     "chunk", "error", "version", "path", "offset", "len", "size", "data", "state", "note",
     "status", "reason", "ref", "to", "what", "count", "bytes", "limit", "previous", "type",
     "result", "_", "held_ms"),
    ("t", "t_ms", "vrms", "irms", "p", "q", "s", "pf", "f", "n", "d", "v1", "i1", "p1",
     "thd_v", "thd_i", "vmin", "vmax", "imin", "imax", "pmin", "pmax", "import_wh",
     "export_wh", "import_varh", "export_varh", "demand_w", "unsaved", "registers",
     "start_s", "start_ms", "duration_ms", "residual_v", "extreme_pct", "category", "relay",
     "presence", "reset_cause", "uptime_s", "offset_s", "messages", "events"),
)
# Attribute starts (page 0): token 0x05 + index, (name, value prefix).
ATTRS = (("t", "num"), ("t", "bool"), ("t", "null"), ("t", "obj"), ("t", "arr"), ("k", ""))
TYPE_TOKEN = {"num": 0x05, "bool": 0x06, "null": 0x07, "obj": 0x08, "arr": 0x09}
KEY_TOKEN = 0x0A
