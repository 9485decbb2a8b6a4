"""The meter's XMPP transport without a network, on all three interpreters
(host_tests/mp_scripts/xmpp_link.py): the stream reader on good and hostile input, SCRAM
from keys computed at deploy (RFC 5802's example), the session's pings, and XmppComms
refusing forged, misdirected and unbound exchanges while taking the genuine one."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "xmpp_link.py"




def test_xmpp_link(interpreter, tmp_path):
    out = json.loads(runner.run(interpreter, SCRIPT, str(tmp_path)))
    # the stream: stanzas as trees, whatever the reads' boundaries (UTF-8 split too)
    features, message, iq = out["whole"]
    assert features[0] == "stream:features" and features[2][0][2][0][3] == "SCRAM-SHA-1"
    assert message[2][0][3] == "h\u00e9llo & \u20acA" and iq[1] == {"type": "get", "id": "p"}
    assert out["bytewise_same"] is True
    # hostile input: one clear line each, never an expansion or an unbounded buffer
    assert out["oversized"] == "XmlError: stanza larger than 40960 characters"
    assert out["deep"] == "XmlError: elements nested deeper than 8"
    assert "DTD refused" in out["laughs"] and "only the five predefined" in out["entity"]
    assert out["text_between"] == "XmlError: text between stanzas"
    assert "expected <stream:stream>" in out["wrong_root"] and "streams" in out["wrong_ns"]
    assert out["stream_error"] == "StreamEnded: stream error: conflict (Replaced)"
    assert out["closed"] == "StreamEnded: the server closed the stream"
    assert "does not match" in out["mismatch"] and "not UTF-8" in out["not_utf8"]
    assert out["before_fault"] == ["XmlError", ["presence", "iq"]]
    assert out["after_keepalives"] == [["presence", {}, [], ""]]
    assert out["many_stanzas"] == 50        # the limit is per stanza, not per stream
    assert out["one_read"] == 3             # one read with three of them: as in pieces
    # SCRAM-SHA-1 from ClientKey/ServerKey alone gives RFC 5802's exact messages
    assert out["scram_first"] == "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    assert out["scram_final"].endswith(",p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert out["scram_verify"] is None
    assert "not the account's server" in out["scram_forged_server"]
    assert "provision the meter again" in out["scram_reset_account"]
    assert "does not extend ours" in out["scram_not_our_nonce"]
    assert "40 hex digits" in out["scram_bad_keys"]
    # what the meter sends parses back, signed over the decoded bytes
    assert out["sent"] == [["presence", {"to": "fleet.im.test"}],
                           ["message", {"to": "fleet.im.test", "id": "u1"}]]
    assert out["up_signed"] is True and out["up_device"] == "meter-x"
    assert out["up_body_bytes"] is True      # the body a piece of its own, not copied
    # refused, each with its reason; nothing applied, nothing deleted from the outbox
    assert out["from_mallory"][:2] == [0, 1] and "not the head-end's component" in \
        out["from_mallory"][2]
    assert out["forged"][:2] == [0, 2] and "signature" in out["forged"][2]
    assert out["error_bounce"][:2] == [0, 3] and "did not take" in out["error_bounce"][2]
    assert out["unbound"][:2] == [0, 4] and "answers no request" in out["unbound"][2]
    assert out["depth_before"] == 1
    # the genuine answer: applied, the outbox acked, the head-end's `next` taken
    assert out["answer"][:2] == [1, 4] and out["depth_after"] == 0 and out["poll_s"] == 42
    assert out["presence"] == [
        '<presence to="f"></presence>',
        '<presence to="f"><show>away</show><status>a &lt;b&gt;</status></presence>',
        '<presence to="f"><show>dnd</show></presence>',
        '<presence to="f"><show>xa</show></presence>',
        '<presence to="f" type="unavailable"><status>bye</status></presence>']
    # pings: the head-end's answered, another query refused as RFC 6120 asks; ours on time,
    # and silence after it a dead link
    assert out["taken"] == []
    assert out["iq_answers"][0] == '<iq type="result" id="q1" to="fleet.im.test"/>'
    assert "service-unavailable" in out["iq_answers"][1]
    assert out["ping_after_25s"] is True
    assert out["dead_link"] == "LinkError: no answer to a ping within 10 s"
