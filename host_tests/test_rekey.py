"""Key rotation on the meter (firmware/rekey.py, ops `rotate_key`) under the MicroPython unix
port, CPython and the board interpreter, one process each (mp_scripts/rekey_checks.py): the
new key equals the one the head-end derives with `cryptography`; only a utility runs it; the
same rotation answers the same key; a bad rid or a public key off the curve is refused with
the reason; both keys work until a response under the new one, then the old key's work
(a stolen key, a replayed rotation) is refused; a power cut at each step loses neither key.
And the head-end's side of a meter's answer (tools/headend/rekey.py)."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from headend import key_rotation as he_rekey
from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "rekey_checks.py"
KEY = b"0123456789abcdef0123456789abcdef"
RID = "0123456789abcdef"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def run(request, tmp_path_factory):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    head = ec.generate_private_key(ec.SECP256R1())
    pub = head.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex()
    d = tmp_path_factory.mktemp("rekey-" + request.param)
    doc = {"dir": str(d), "head_pub": pub, "rid": RID}
    out = json.loads(runner.run(request.param, DRIVER, stdin=json.dumps(doc).encode(),
                                extra=[str(runner.ROOT / "host_tests" / "mp_scripts")]))
    return head, out


def test_the_meter_derives_the_key_the_head_end_does(run):
    head, out = run
    assert out["run"] == "done" and out["result"]["status"] == "done", out["result"]
    meter_pub = bytes.fromhex(out["result"]["body"]["pub"])
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), meter_pub)
    expected = he_rekey.derive(head.exchange(ec.ECDH(), peer), "meter-f", RID).hex()
    assert out["new_key"] == expected
    assert out["committed"] == [expected]


def test_only_a_utility_runs_it_and_a_replay_is_not_run_again(run):
    _, out = run
    assert (out["peer"], out["operator"]) == ("rejected", "rejected")
    assert out["replayed"] == "duplicate" and out["same_again"] and out["still_pending"]


def test_bad_arguments_are_refused_with_the_reason(run):
    _, out = run
    assert all(e is not None and e.startswith("ValueError") for e in out["errors"]), out["errors"]
    assert "rid" in out["errors"][0] and "P-256" in out["errors"][1]


def test_both_keys_until_a_response_under_the_new_one_then_only_the_new(run):
    _, out = run
    new = out["new_key"]
    assert out["reloaded"] and out["keys_before_told"] == [KEY.hex(), new]
    assert out["sign_before_told"] == KEY.hex()           # the head-end may not hold it yet
    assert out["new_key_work"] == "done"
    assert out["other_rid_ignored"] and out["told"] and out["sign_after_told"] == new
    assert out["after_commit"] is None
    assert out["old_key_work"] == "rejected" and out["old_key_reason"] == "bad signature"


def test_a_head_end_key_that_differs_keeps_the_old_key(run):
    _, out = run
    pending, why = out["mismatch"]
    assert pending is None and "old key kept" in why


def test_power_cuts_are_settled_at_start(run):
    _, out = run
    assert out["settled"] is None and out["damaged"] is None


class _Db:
    """The few calls tools/headend/rekey.on_result makes, over a dict."""

    class sealer:
        @staticmethod
        def seal(aad, text):
            return aad + ":" + text

        @staticmethod
        def open(aad, text):
            return text[len(aad) + 1:] if text.startswith(aad + ":") else None

    def __init__(self, secret):
        self.rk = {"device": "m", "rid": RID, "work": 1, "next_key": None,
                   "secret": "m#rekey:" + secret}
        self.audit = []

    def one(self, sql, *args):
        return dict(self.rk) if self.rk else None

    def run(self, sql, *args):
        if sql.startswith("DELETE FROM rekeys"):
            self.rk = None
        elif sql.startswith("UPDATE rekeys"):
            self.rk["next_key"] = args[0]
        else:
            self.audit.append(args)


@pytest.mark.parametrize("body", [None, {}, {"pub": 7}, {"pub": "zz"}, {"pub": "04" + "00" * 64},
                                  {"pub": "04" + "11" * 64}])
def test_head_end_ends_a_rotation_whose_answer_is_not_a_key(body):
    secret = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
    db = _Db(secret.to_bytes(32, "big").hex())
    he_rekey.on_result(db, "m", {"num": 1}, "done", body, 0)
    assert db.rk is None and db.audit            # ended, and the log says so


class _Hub:
    def __init__(self, mqtt_dir=None, nats_dir=None):
        self.settings = type("S", (), {"mqtt_dir": mqtt_dir, "nats_dir": nats_dir})()
        self.db = None
        self.promoted = 0

    def tx(self):
        self.promoted += 1
        raise AssertionError("no key change may be committed here")


@pytest.mark.parametrize("transport, mqtt_dir, says", [
    (None, None, "has not exchanged yet"), ("sms", "/d", "http, mqtt, xmpp, email"),
    ("mqtt", None, "--mqtt-dir"), ("mqtt", None, "--nats-dir")])
def test_head_end_refuses_a_rotation_it_cannot_finish_with_the_reason(transport, mqtt_dir,
                                                                      says):
    with pytest.raises(he_rekey.Refused) as e:
        he_rekey.start(_Hub(mqtt_dir), {"id": "m", "transport": transport}, "u", 0)
    assert e.value.status == 409 and says in e.value.reason and "\n" not in e.value.reason


@pytest.mark.parametrize("where", ["mqtt_dir", "nats_dir"])
def test_head_end_keeps_both_keys_when_the_broker_password_cannot_follow(tmp_path, where):
    """A broker (or NATS cluster) directory without its bridge credentials: the switch fails
    before the key change, the answer goes under the old key."""
    hub = _Hub(**{where: str(tmp_path)})
    assert he_rekey.promote(hub, "m", "22" * 32, "11" * 32) == "11" * 32
    assert hub.promoted == 0
