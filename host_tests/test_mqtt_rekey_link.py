"""A key rotation on the meter's MQTT link (firmware/mqtt_comms.py, rekey.py) under each
interpreter, without a network (host_tests/mp_scripts/mqtt_rekey_link.py): the broker
password follows the key the broker last took, a login refused for its password is tried
with the other key's, the refusal is read even when the broker's close came with it, ups
and presence are signed with the new key once the head-end holds it, and a down under the
new key commits the rotation, after which the old key's downs are refused."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "mqtt_rekey_link.py"
OLD = (b"o" * 32).hex()


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request, tmp_path_factory):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    head = ec.generate_private_key(ec.SECP256R1()).public_key()
    doc = {"head_pub": head.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex(),
           "rid": "00112233445566ff"}
    tmp = tmp_path_factory.mktemp("mqtt-rekey-" + request.param)
    return json.loads(runner.run(request.param, SCRIPT, str(tmp),
                                 stdin=json.dumps(doc).encode()))


def test_the_login_follows_the_key_the_broker_took(out):
    assert out["login_plain"] and out["login_before_told"]
    assert "not authorised" in out["refusal"] and out["refused_code"] == 5
    assert out["login_after_refusal"] and out["login_after_other_failure"]
    assert out["login_after_second_refusal"]


def test_signed_with_the_new_key_once_the_head_end_holds_it(out):
    new = out["new_key"]
    assert out["up_before_told"] == OLD
    assert out["told"] and out["up_after_told"] == new and out["presence_after_told"]


def test_a_down_under_the_new_key_commits_and_the_old_key_stops(out):
    assert out["forged_taken"] == 0
    assert out["committed"] == [out["new_key"]] and out["pending_after"] is None
    assert out["login_after_commit"] and out["login_other_after_commit"] is False
    assert out["old_taken_after"] == 0
