"""A key rotation on the meter's MQTT link (firmware/mqtt_comms.py, rekey.py) under each
interpreter, without a network (host_tests/mp_scripts/mqtt_rekey_link.py): the broker
password follows the key the broker last took, a login refused for its password is tried
with the other key's (at once and on the same node the first time), the refusal is read
even when the broker's close came with it, ups and presence are signed with the new key
once the head-end holds it, and a down under the new key commits the rotation, after which
the old key's downs are refused."""

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


def test_a_refused_login_mid_rotation_tries_the_other_key_at_once_on_the_same_node(out):
    """The node that refused the password holds the other key's (the head-end switched
    it): that login is tried at once, not after the back-off and not on the next node of
    the cluster. A second refusal in a row is a failure like any other, as is a refusal
    once the meter holds one key again."""
    run, quick = out["run"], out["quick"]
    assert quick < 1
    assert run["tried"] == [["n1", "old"],      # taken, then lost: the next node
                            ["n2", "old"],      # refused: the other key's, here, at once
                            ["n2", "new"],      # refused too: back off, the next node
                            ["n1", "old"],      # taken, then lost
                            ["n2", "old"],      # refused: at once again (a login was taken)
                            ["n2", "new"]]
    waits = run["waits"]
    assert waits[1] == quick and waits[4] == quick
    assert min(waits[0], waits[2], waits[3]) >= 0.5 and waits[2] > waits[0]  # the back-off
    one = out["run_one_key"]
    assert one["tried"] == [["n1", "new"], ["n2", "new"], ["n1", "new"]]
    assert min(one["waits"]) >= 0.5


def test_signed_with_the_new_key_once_the_head_end_holds_it(out):
    new = out["new_key"]
    assert out["up_before_told"] == OLD
    assert out["told"] and out["up_after_told"] == new and out["presence_after_told"]


def test_a_down_under_the_new_key_commits_and_the_old_key_stops(out):
    assert out["forged_taken"] == 0
    assert out["committed"] == [out["new_key"]] and out["pending_after"] is None
    assert out["login_after_commit"] and out["login_other_after_commit"] is False
    assert out["old_taken_after"] == 0
