"""SOAP 1.2 with the reversal, at the head-end (docs/protocol.md "SOAP"; the meter's side is
firmware/enc_soap.py). The meter's request is a SOAP request carrying its data; the answer
carries, inside <reversed>, a SOAP request addressed to the meter (its work); the meter's
next request carries, inside <reversed>, the SOAP response to it (`done` and the results).
The fields are the XML form's (xml_form.py); WSDL at /schemas/exchange.wsdl."""

from . import xml_form
from .xml_form import NS, BadDocument, is_ns, local

SOAP_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"
_OPEN = '<env:Envelope xmlns:env="%s"><env:Body>' % SOAP_NS
_CLOSE = "</env:Body></env:Envelope>"


def body_of(envelope):
    """The one element in a SOAP 1.2 Body; BadDocument otherwise, for a header the
    head-end would have to understand, or a fault."""
    if not is_ns(envelope, SOAP_NS, "Envelope"):
        raise BadDocument("not a SOAP 1.2 envelope: the root is %s" % envelope.tag)
    parts = list(envelope)
    body = None
    for part in parts:
        if is_ns(part, SOAP_NS, "Header") and body is None:
            for block in part:
                if block.get("{%s}mustUnderstand" % SOAP_NS) in ("true", "1"):
                    raise BadDocument("SOAP header %s must be understood, and is not"
                                      % block.tag)
        elif is_ns(part, SOAP_NS, "Body") and body is None:
            body = part
        else:
            raise BadDocument("unexpected %s in the SOAP envelope" % part.tag)
    if body is None or len(body) != 1:
        raise BadDocument("the SOAP Body must hold exactly one element")
    inner = body[0]
    if is_ns(inner, SOAP_NS, "Fault"):
        raise BadDocument("a SOAP fault is not an exchange")
    return inner


def decode_request(raw):
    """The request dict: the <request>'s fields, with `done` and the result items of the
    SOAP response inside <reversed> merged back (items in `seq` order)."""
    req = body_of(xml_form.parse(raw))
    reply = None
    for kid in list(req):
        if is_ns(kid, NS, "reversed"):
            if reply is not None:
                raise BadDocument("more than one <reversed> in the request")
            req.remove(kid)
            reply = kid
    value = xml_form.root_value(req, "request")
    if reply is None:
        return value
    if len(reply) != 1:
        raise BadDocument("<reversed> must hold one SOAP envelope")
    answer = body_of(reply[0])
    if not is_ns(answer, NS, "executeResponse"):
        raise BadDocument("the reversed response is <%s>, not <executeResponse>"
                          % local(answer))
    fields = xml_form.value_of(answer)
    if not isinstance(fields, dict) or set(fields) - {"done", "items"}:
        raise BadDocument("<executeResponse> holds only done and items")
    for name in ("done", "items"):
        if name not in fields:
            continue
        if name in value:
            if name == "done" or not isinstance(value[name], list):
                raise BadDocument("%s both in the request and in its reversed response" % name)
        if not isinstance(fields[name], list):
            raise BadDocument("invalid field %s: must be an array" % name)
        value[name] = value.get(name, []) + fields[name]
    items = value.get("items")
    if isinstance(items, list) and all(isinstance(i, dict) and type(i.get("seq")) is int
                                       for i in items):
        items.sort(key=lambda i: i["seq"])
    return value


def encode_response(answer):
    """The answer as a SOAP response; its work, if any, as the reversed SOAP request."""
    work = answer.get("work")
    fields = {k: v for k, v in answer.items() if k != "work"}
    tail = ""
    if work:
        tail = ('<reversed>%s<env:Header><wsa:To xmlns:wsa="%s">urn:backchannel:device:%s'
                '</wsa:To><wsa:Action xmlns:wsa="%s">%s:execute</wsa:Action></env:Header>'
                '<env:Body><execute>%s</execute>%s</reversed>'
                % ('<env:Envelope xmlns:env="%s">' % SOAP_NS, WSA_NS,
                   xml_form.escape(answer.get("device", "")), WSA_NS, NS,
                   _work(work), _CLOSE))
    elif "work" in answer:
        fields["work"] = []
    return (_OPEN + xml_form.document("response", fields, tail=tail) + _CLOSE).encode()


def _work(work):
    out = []
    xml_form.write(out, "work", work)
    return "".join(out)


def fault(reason, sender=True):
    """A SOAP 1.2 fault for a refused request (the HTTP status says which)."""
    return ('<env:Envelope xmlns:env="%s"><env:Body><env:Fault><env:Code><env:Value>env:%s'
            '</env:Value></env:Code><env:Reason><env:Text xml:lang="en">%s</env:Text>'
            '</env:Reason></env:Fault></env:Body></env:Envelope>'
            % (SOAP_NS, "Sender" if sender else "Receiver", xml_form.escape(reason))).encode()
