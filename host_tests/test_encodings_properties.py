"""Properties of the meter's encodings (hypothesis, CPython in-process): any JSON request the
meter could write survives its encoding to the head-end exactly (control characters, which
XML cannot carry, become U+FFFD), and the meter's XML parser reads what lxml writes
exactly as lxml reads it (a differential test: names, namespaces, attributes, text with
every character class XML allows)."""

import pytest
from budget import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from headend import encodings
from lab import runner

pytestmark = pytest.mark.unit

xmlmini = runner.import_firmware("xmlmini")
CODECS = {name: runner.import_firmware("enc_" + name) for name in ("xml", "soap", "wbxml")}

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
keys = st.text(max_size=12, alphabet=st.characters(blacklist_categories=("Cs",))) | \
    st.sampled_from(["vrms", "t", "e", "_", "k", "xml", "body", "1st", "a.b", "a-b"])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20)
requests = st.fixed_dictionaries(
    {"v": st.just(2), "device": text, "nonce": st.just("5f0c2a9e81d4b7c3")},
    optional={"done": st.lists(text, max_size=3),
              "items": st.lists(st.fixed_dictionaries({
                  "seq": st.integers(0, 2**40),
                  "kind": st.sampled_from(["reading", "result", "event", "send"]),
                  "body": st.dictionaries(keys, values, max_size=5)}),
                  max_size=4, unique_by=lambda i: i["seq"]).map(    # an outbox: seq order
                      lambda items: sorted(items, key=lambda i: i["seq"])),
              "extra": values})


def cleaned(value):
    """What XML can carry: control characters (bar tab, LF, CR) as U+FFFD."""
    if isinstance(value, str):
        return xmlmini.clean(value)
    if isinstance(value, list):
        return [cleaned(v) for v in value]
    if isinstance(value, dict):
        return {xmlmini.clean(k): cleaned(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("encoding", sorted(CODECS))
@settings(max_examples=examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_any_request_reaches_the_head_end_exactly(encoding, request):
    raw = CODECS[encoding].encode(request)
    got = encodings.decode_request(encoding, raw)
    # (SOAP carries the results apart, in the reversal, and merges them back by seq)
    assert got == cleaned(request)


names = st.sampled_from(["a", "b", "c-d", "e.f", "_g", "h1", "\u00e9t\u00e9"])
xml_text = st.text(alphabet=st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff",
    min_codepoint=0x09).filter(lambda c: c >= " " or c in "\t\n\r"), max_size=12)


@st.composite
def trees(draw, depth=0):
    el = etree.Element(draw(names), nsmap=draw(st.sampled_from([None, {None: "urn:x"},
                                                                 {"p": "urn:p"}])))
    for name in draw(st.lists(st.sampled_from(["x", "y", "z-1"]), max_size=3, unique=True)):
        el.set(name, draw(xml_text))
    el.text = draw(xml_text)
    if depth < 4:
        for _ in range(draw(st.integers(0, 3))):
            el.append(draw(trees(depth + 1)))
    return el


def as_lists(el):
    """An lxml element in xmlmini's shape: [ns, name, attrs, children, own text]."""
    q = etree.QName(el)
    own = (el.text or "") + "".join(kid.tail or "" for kid in el)
    return [q.namespace or "", q.localname, dict(el.attrib), [as_lists(k) for k in el], own]


@settings(max_examples=examples(300), deadline=None)
@given(tree=trees())
def test_the_meters_parser_reads_what_lxml_writes_as_lxml_does(tree):
    raw = etree.tostring(tree, encoding="utf-8", xml_declaration=True)
    again = etree.fromstring(raw)
    assert xmlmini.parse(raw, max_depth=8, max_elements=1000) == as_lists(again)
