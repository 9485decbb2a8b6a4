# The exchange in XML (docs/protocol.md "Encodings"): the JSON fields as elements in the
# protocol's namespace (xmlvalue.py), a <request> up and a <response> down; the head-end
# publishes its XSD at /schemas/exchange.xsd. Same interface as enc_json.

import xmlmini
import xmlvalue

CONTENT_TYPE = "application/xml"

ORDER = xmlvalue.ORDER

# What one response may cost the meter: no larger than httpc's MAX_BODY, and a work item
# is about 10 elements.
LIMITS = {"max_size": 256 * 1024, "max_depth": 12, "max_elements": 2048, "max_attrs": 4}


def encode(body):
    return xmlvalue.document("request", body, ORDER).encode()


def parts(body):
    """encode(body) in pieces, body["items"] being the outbox's JSON records (enc_json)."""
    out = xmlvalue.Parts()
    out.add('<request xmlns="%s">' % xmlvalue.NS)
    out.fields(body, ORDER)
    out.add("</request>")
    return out.done()


def decode(data):
    return xmlvalue.root_value(xmlmini.parse(data, **LIMITS), "response")
