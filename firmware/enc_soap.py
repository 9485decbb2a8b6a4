# The exchange in SOAP 1.2 with the reversal (docs/protocol.md "SOAP"): the meter's request
# is a SOAP request carrying its data; the head-end's response holds, besides its answer, a
# SOAP *request* addressed to the meter (<reversed>: the work); the meter's next request
# carries the SOAP *response* to it (<reversed>: `done` and the results). The fields are
# the XML encoding's (xmlvalue.py); the head-end's WSDL is at /schemas/exchange.wsdl.

import json

import enc_xml
import xmlmini
import xmlvalue

CONTENT_TYPE = "application/soap+xml"
SOAP_NS = "http://www.w3.org/2003/05/soap-envelope"
_OPEN = '<env:Envelope xmlns:env="%s"><env:Body>' % SOAP_NS
_CLOSE = "</env:Body></env:Envelope>"
LIMITS = dict(enc_xml.LIMITS, max_depth=16)


def _split(body, kind):
    """(rest, reply): the request's fields, and `done` with the result items (kind(item)
    is "result") for the SOAP response inside <reversed>; reply is None when it has none."""
    items = body.get("items") or ()
    answers = [it for it in items if kind(it) == "result"]
    done = body.get("done")
    if not (answers or done):
        return body, None
    rest = {}
    for k in body:
        if k != "done" and k != "items":
            rest[k] = body[k]
    others = [it for it in items if kind(it) != "result"]
    if others or ("items" in body and not answers):
        rest["items"] = others
    reply = {}
    if "done" in body:
        reply["done"] = done
    if answers:
        reply["items"] = answers
    return rest, reply


def encode(body):
    """A SOAP request: the body's fields, with `done` and the result items (the answers to
    the head-end's reversed requests) in a SOAP response inside <reversed>."""
    rest, reply = _split(body, lambda it: it.get("kind"))
    if reply is None:
        return (_OPEN + xmlvalue.document("request", body, enc_xml.ORDER) + _CLOSE).encode()
    out = ["<reversed>", _OPEN, "<executeResponse>"]
    for k in reply:
        xmlvalue.write(out, k, reply[k])
    out.append("</executeResponse>")
    out.append(_CLOSE)
    out.append("</reversed>")
    return (_OPEN + xmlvalue.document("request", rest, enc_xml.ORDER, "".join(out))
            + _CLOSE).encode()


def parts(body):
    """encode(body) in pieces, body["items"] being the outbox's JSON records (enc_json):
    each is parsed once to learn its kind, and again, one at a time, as it is written."""
    rest, reply = _split(body, lambda raw: json.loads(raw).get("kind"))
    out = xmlvalue.Parts()
    out.add(_OPEN + '<request xmlns="%s">' % xmlvalue.NS)
    out.fields(rest, enc_xml.ORDER)
    if reply is not None:
        out.add("<reversed>" + _OPEN + "<executeResponse>")
        for k in reply:
            out.field(k, reply[k])
        out.add("</executeResponse>" + _CLOSE + "</reversed>")
    out.add("</request>" + _CLOSE)
    return out.done()


def body_of(envelope):
    """The one element in a SOAP 1.2 envelope's Body; XmlError for anything else, a
    header the meter must understand, or a fault (with its reason)."""
    if envelope[0] != SOAP_NS or envelope[1] != "Envelope":
        raise xmlmini.XmlError("not a SOAP 1.2 envelope: <%s>" % envelope[1][:32])
    body = None
    for part in envelope[3]:
        if part[0] == SOAP_NS and part[1] == "Header" and body is None:
            for block in part[3]:
                for a in block[2]:
                    if a.endswith("mustUnderstand") and block[2][a] in ("true", "1"):
                        raise xmlmini.XmlError("SOAP header <%s> must be understood"
                                               % block[1][:32])
        elif part[0] == SOAP_NS and part[1] == "Body" and body is None:
            body = part
        else:
            raise xmlmini.XmlError("unexpected <%s> in the SOAP envelope" % part[1][:32])
    if body is None or len(body[3]) != 1:
        raise xmlmini.XmlError("the SOAP Body must hold exactly one element")
    inner = body[3][0]
    if inner[0] == SOAP_NS and inner[1] == "Fault":
        raise xmlmini.XmlError("SOAP fault: %s" % _fault_text(inner)[:120])
    return inner


def _fault_text(el):
    for kid in el[3]:
        found = _fault_text(kid)
        if found:
            return found
    return el[4].strip() if el[1] == "Text" else ""


def decode(data):
    """The response fields, with the work of the reversed SOAP request (if any) as `work`."""
    resp = body_of(xmlmini.parse(data, **LIMITS))
    reversed_ = None
    kids = resp[3]
    for i in range(len(kids)):
        if kids[i][0] == xmlvalue.NS and kids[i][1] == "reversed":
            reversed_ = kids.pop(i)
            break
    work = None
    if reversed_ is not None:
        if len(reversed_[3]) != 1:
            raise xmlmini.XmlError("<reversed> must hold one SOAP envelope")
        call = body_of(reversed_[3][0])
        if call[0] != xmlvalue.NS or call[1] != "execute":
            raise xmlmini.XmlError("the reversed request is <%s>, not <execute>" % call[1][:32])
        work = xmlvalue.value_of(call)
    value = xmlvalue.root_value(resp, "response")
    if isinstance(work, dict) and "work" in work:
        value["work"] = work["work"]
    return value
