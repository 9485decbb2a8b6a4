"""The exchange's four encodings (docs/protocol.md "Encodings"): JSON (the default), XML,
SOAP 1.2 with the reversal, WBXML. A request's Content-Type names its encoding, the body
must look like it, and the answer goes back in the same one; the exchange core in between
sees the same request dict and answers with the same response dict whatever the encoding,
and the signatures cover the raw bytes as sent."""

import json

from . import signing, soap, wbxml, xml_form
from .xml_form import BadDocument

MEDIA = {"json": "application/json", "xml": "application/xml",
         "soap": "application/soap+xml", "wbxml": "application/vnd.wap.wbxml"}
_BY_MEDIA = {"application/json": "json", "application/xml": "xml", "text/xml": "xml",
             "application/soap+xml": "soap", "application/vnd.wap.wbxml": "wbxml"}
_LOOKS = {"json": "JSON", "xml": "XML", "soap": "XML", "wbxml": "WBXML"}


class Unsupported(ValueError):
    """A Content-Type that is no encoding of the exchange (415)."""


def of(content_type):
    """The encoding a Content-Type header names (parameters such as charset ignored);
    JSON when there is none."""
    if not content_type:
        return "json"
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _BY_MEDIA:
        raise Unsupported("Content-Type %s is not an encoding of the exchange (%s)"
                          % (media[:64], ", ".join(sorted(MEDIA.values()))))
    return _BY_MEDIA[media]


def looks_like(raw):
    """What the body looks like from its first byte: JSON, XML or WBXML (or None)."""
    head = raw.lstrip(b" \t\r\n")[:1]
    if head in (b"{", b"["):
        return "JSON"
    if head == b"<" or raw[:3] == b"\xef\xbb\xbf":
        return "XML"
    if raw[:1] in (b"\x01", b"\x02", b"\x03"):
        return "WBXML"
    return None


def decode_request(encoding, raw):
    """The request as the JSON data model; BadDocument with the 400's reason."""
    seen = looks_like(raw)
    if seen is not None and seen != _LOOKS[encoding]:
        raise BadDocument("Content-Type %s does not match the body, which looks like %s"
                          % (MEDIA[encoding], seen))
    if encoding == "json":
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise BadDocument("malformed JSON") from None
    if encoding == "xml":
        return xml_form.root_value(xml_form.parse(raw), "request")
    if encoding == "soap":
        return soap.decode_request(raw)
    return wbxml.decode_request(raw)


def encode_response(encoding, answer):
    """The response body (bytes) for a response dict, in the request's encoding."""
    if encoding == "json":
        return signing.canonical(answer).encode()
    if encoding == "xml":
        return xml_form.document("response", answer).encode()
    if encoding == "soap":
        return soap.encode_response(answer)
    return wbxml.encode_response(answer)


def error_body(encoding, reason):
    """(body, media type) of a refusal: a SOAP fault for SOAP, an <error> for XML, else
    JSON {"error": reason} (WBXML too: a refusal is for people and logs)."""
    if encoding == "soap":
        return soap.fault(reason), MEDIA["soap"]
    if encoding == "xml":
        return xml_form.document("error", {"error": reason}).encode(), MEDIA["xml"]
    return json.dumps({"error": reason}).encode(), MEDIA["json"]
