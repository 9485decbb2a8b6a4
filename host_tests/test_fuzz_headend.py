"""Fuzz the head-end with hypothesis: POST /v1/exchange with arbitrary bodies and signatures
(TestClient), and every operation of its OpenAPI spec with schemathesis. Budgets and
statistics: fuzz_common.py.
"""

import collections
import json
import os
import time

import pytest
import schemathesis
from fuzz_common import CASE_SECONDS, FUZZ, Stats, json_values
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

pytestmark = pytest.mark.unit

# --- the head-end's exchange endpoint ---

@pytest.fixture(scope="module")
def exchange_app(tmp_path_factory):
    from fastapi.testclient import TestClient
    from headend_harness import Headend

    he = Headend(tmp_path_factory.mktemp("fuzzhe"), max_body=4096, max_wait=0.0)
    key = fz_key = None
    from headend import devices
    key = devices.create(he.hub.db, "meter-f", poll=0)
    fz_key = key
    with TestClient(he.app) as client:
        yield he, client, fz_key


def _hmac(key_hex, data):
    import hashlib
    import hmac
    return hmac.new(bytes.fromhex(key_hex), data, hashlib.sha256).hexdigest()


@st.composite
def exchange_bodies(draw):
    """(raw body, signature mode): arbitrary bytes, arbitrary JSON, or request-shaped JSON
    with fields mutated, for the registered device or not."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        raw = draw(st.binary(max_size=300))
    elif kind == 1:
        raw = json.dumps(draw(json_values)).encode()
    else:
        body = {"v": 2, "device": "meter-f", "epoch": "e" * 16, "ts": time.time(),
                "nonce": os.urandom(8).hex(), "wait": 0, "room": 4, "done": [], "items": []}
        for name in draw(st.lists(st.sampled_from(sorted(body) + ["x"]), max_size=3)):
            if draw(st.booleans()):
                body[name] = draw(json_values)
            else:
                body.pop(name, None)
        if draw(st.booleans()):
            body["items"] = draw(st.lists(st.fixed_dictionaries(
                {"seq": st.integers(-2, 2**60) | json_values,
                 "kind": st.sampled_from(["reading", "event", "result", "presence", "send",
                                          "notice", "event_start"]) | json_values,
                 "body": st.dictionaries(st.sampled_from(["work", "status", "state", "to", "op",
                                                          "args", "ref", "note", "body"]),
                                         json_values | st.sampled_from(["w-00000001",
                                                                        "meter-f", "done"]),
                                         max_size=4) | json_values}), max_size=3))
        raw = json.dumps(body).encode()             # NaN and Infinity included
        if draw(st.integers(0, 9)) == 0:
            raw = raw * 20                      # oversized (max_body is 4096 here)
    sig = draw(st.sampled_from(["good", "none", "junk", "upper", "empty"]))
    return raw, sig, draw(st.text(max_size=70))


def test_headend_exchange(exchange_app):
    he, client, key = exchange_app
    stats = Stats("exchange")

    def post(raw, sig, junk):
        headers = {"Content-Type": "application/json"}
        if sig == "good":
            headers["X-BC-Signature"] = _hmac(key, raw)
        elif sig == "upper":
            headers["X-BC-Signature"] = _hmac(key, raw).upper()
        elif sig == "empty":
            headers["X-BC-Signature"] = ""
        elif sig == "junk":
            headers["X-BC-Signature"] = junk.encode("ascii", "replace").decode().replace(
                "\r", "").replace("\n", "").strip() or "x"
        r = client.post("/v1/exchange", content=raw, headers=headers)
        assert r.status_code in (200, 400, 401, 409, 413), (r.status_code, r.text, raw[:200])
        if r.status_code != 200:
            assert isinstance(r.json().get("error"), str) and r.json()["error"]
        else:
            assert r.headers["x-bc-signature"] == _hmac(key, r.content)
        return str(r.status_code)

    @FUZZ
    @given(exchange_bodies())
    def check(case):
        stats.case(post, *case)

    stats.run(check)


# --- peer rules (POST /v1/peer-rules, peer_rules.parse) and signed MQTT presence ---

PEER_WORDS = st.sampled_from(["*", "site-a", "site-b", "nowhere", "", "read", "get_events",
                              "set_presence", "relay", "set_config", "reboot", "rotate_key"])


def test_headend_peer_rules(tmp_path):
    """Arbitrary rules into peer_rules.parse: a RuleError or a rule that names groups that
    exist (or *) and peer ops only, never one a peer may not send."""
    from headend_harness import Headend

    from headend import groups, peer_rules, policy

    he = Headend(tmp_path)
    for g in ("site-a", "site-b"):
        groups.create(he.hub.db, g, [])
    stats = Stats("peer_rules")

    def parse(rule):
        try:
            out = peer_rules.parse(rule, he.hub.db)
        except peer_rules.RuleError as e:
            assert e.status in (400, 404) and str(e)
            return "RuleError %d" % e.status
        assert out["from"] in ("*", "site-a", "site-b") and out["to"] in ("*", "site-a",
                                                                           "site-b")
        assert out["ops"] and set(out["ops"]) <= set(policy.PEER_OPS)
        return "ok"

    rule = st.fixed_dictionaries({"from": PEER_WORDS | json_values,
                                  "to": PEER_WORDS | json_values,
                                  "ops": st.lists(PEER_WORDS | json_values, max_size=4)
                                  | json_values}) | json_values
    mutated = st.tuples(rule, st.lists(st.sampled_from(["from", "to", "ops", "x"]),
                                       max_size=2))

    @FUZZ
    @given(mutated)
    def check(case):
        body, drop = case
        if isinstance(body, dict):
            body = dict(body)
            for name in drop:
                if name in body:
                    del body[name]
                else:
                    body[name] = "x"
        stats.case(parse, body)

    stats.run(check)


def test_headend_presence(tmp_path):
    """Arbitrary messages on a meter's presence topic into mqtt_presence.verified and the
    gate: never an exception; only a message signed with the meter's key gets through."""
    from headend import mqtt_presence

    key = "ab" * 32
    gate = mqtt_presence.PresenceGate()
    stats = Stats("presence")

    def offer(body, current):
        msg = mqtt_presence.verified(body, "meter-f", key)
        if msg is None:
            return "refused"
        verdict = gate.offer("meter-f", current, msg)
        gate.up("meter-f", current)
        return verdict if verdict in ("take", "wait") else "dropped"

    signed = st.builds(lambda conn, n, state, note: json.loads(mqtt_presence.sign_presence(
        key, "meter-f", conn, n, state, note)), st.sampled_from(["c1", "c2", ""]),
        st.integers(0, 4), st.sampled_from(["available", "unavailable", "x"]),
        st.text(max_size=8))

    @FUZZ
    @given(signed | json_values, st.lists(st.tuples(st.sampled_from(
        ["state", "note", "device", "conn", "n", "sig", "x"]), json_values), max_size=2),
        st.sampled_from(["c1", "c2", None]))
    def check(body, changes, current):
        if isinstance(body, dict):
            body = dict(body)
            for name, value in changes:
                body[name] = value
        stats.case(offer, body, current)

    stats.run(check)


# --- the head-end API against its own OpenAPI spec (schemathesis) ---

SCHEMA_EXAMPLES = int(os.environ.get("BC_SCHEMA_EXAMPLES", "10"))
SCHEMA_STATS = collections.Counter()


@pytest.fixture(scope="module")
def api_headend(tmp_path_factory):
    from headend_harness import Headend

    from headend import devices

    he = Headend(tmp_path_factory.mktemp("schema"), max_wait=0.0)
    for name in ("meter-a", "meter-b"):
        devices.create(he.hub.db, name, poll=0)
    return he


@pytest.fixture(scope="module")
def api_operations(api_headend):
    """The head-end's OpenAPI operations as schemathesis reads them, once for both modes."""
    api = schemathesis.openapi.from_asgi("/openapi.json", api_headend.app)
    return [r.ok() for r in api.get_all_operations()]


@pytest.mark.xdist_group("openapi")    # both modes on one worker: one head-end, one schema
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_no_server_errors(api_headend, api_operations, mode):
    """Every operation of /openapi.json, with schema-valid (positive) and -invalid
    (negative) inputs, operator, utility and admin tokens: never a 5xx, and every error is
    {"error": ...}. (Schemathesis strategies driven by hypothesis directly: its pytest
    plugin does not load under this pytest.)"""
    from schemathesis.generation.modes import GenerationMode

    tokens = {"operator": api_headend.op_token, "utility": api_headend.util_token,
              "admin": api_headend.admin_token}
    failures = []
    operations = api_operations
    assert len(operations) >= 15
    for operation in operations:
        strategy = operation.as_strategy(GenerationMode(mode))

        @settings(max_examples=SCHEMA_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(case=strategy, role=st.sampled_from(sorted(tokens)))
        def check(case, role):
            t = time.monotonic()
            response = case.call(headers={"Authorization": "Bearer %s" % tokens[role]})
            took = time.monotonic() - t
            SCHEMA_STATS[response.status_code] += 1
            bad = None
            if took > CASE_SECONDS:
                bad = "took %.1f s" % took
            elif response.status_code >= 500:
                bad = "status %d: %s" % (response.status_code, response.text[:300])
            elif response.status_code >= 400 and not isinstance(
                    _json_or_none(response).get("error"), str):
                bad = "error body without `error`: %s" % response.text[:300]
            if bad:
                failures.append("%s %s body=%r: %s" % (case.method, case.formatted_path,
                                                       case.body, bad))

        try:
            check()
        except Unsatisfiable:       # nothing to make invalid (e.g. GET /v1/health, negative)
            SCHEMA_STATS["no %s inputs" % mode] += 1
    assert not failures, "%d failures, first: %s" % (len(failures), failures[0])


def _json_or_none(response):
    try:
        out = response.json()
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def test_openapi_report():
    """Reports the schemathesis run above (BC_FUZZ_STATS)."""
    path = os.environ.get("BC_FUZZ_STATS")
    if path and SCHEMA_STATS:
        with open(path, "a") as f:
            f.write(json.dumps({"parser": "openapi", "runtime": "schemathesis",
                                "examples": SCHEMA_STATS.total(),
                                "outcomes": {str(k): v for k, v in SCHEMA_STATS.items()}})
                    + "\n")


def test_api_non_finite_and_huge_numbers(api_headend):
    """Found by fuzzing: NaN/Infinity (Python's json reads them) and numbers beyond an SQLite
    INTEGER gave 500s (the 422 body could not encode the echoed input; a group deadline or
    gid overflowed). Now clear 4xx errors."""
    from fastapi.testclient import TestClient

    h = {"Authorization": "Bearer %s" % api_headend.op_token,
         "Content-Type": "application/json"}
    with TestClient(api_headend.app) as c:
        c.post("/v1/groups", headers=h, json={"name": "gx", "members": ["meter-a"]})
        for value in ("NaN", "Infinity", "-Infinity", "1e300", "9.3e18"):
            for method, path, body in (
                    ("POST", "/v1/groups/gx/work", '{"op": "read", "deadline": %s}'),
                    ("POST", "/v1/devices/meter-a/work", '{"op": "read", "expires_in": %s}'),
                    ("PATCH", "/v1/devices/meter-a", '{"poll": %s}'),
                    ("POST", "/v1/devices", '{"id": "m-x", "poll": %s}')):
                token = api_headend.admin_token if path == "/v1/devices" else \
                    api_headend.op_token     # registering needs admin (else 403 first)
                r = c.request(method, path, content=(body % value).encode(),
                              headers=dict(h, Authorization="Bearer %s" % token))
                assert r.status_code in (400, 422), (path, value, r.status_code, r.text)
                assert r.json()["error"]
        for gid in ("0", "-1", "99999999999999999999999"):
            for method in ("GET", "DELETE"):
                r = c.request(method, "/v1/groups/gx/work/" + gid, headers=h)
                assert r.status_code in (404, 422), (gid, r.status_code, r.text)
