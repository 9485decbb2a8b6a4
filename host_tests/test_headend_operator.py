"""Operator API: bearer tokens and roles, devices, readings/events, clear 4xx errors and
an OpenAPI spec that lists the endpoints."""

import json

import pytest
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter
from headend_harness import Api, Headend, admin, client, headend, op  # noqa: F401

pytestmark = pytest.mark.unit


def test_tokens_required(client, headend):
    assert client.get("/v1/devices").status_code == 401
    r = client.get("/v1/devices", headers={"Authorization": "Bearer wrong-token-123456"})
    assert r.status_code == 401 and r.json() == {"error": "invalid token"}
    assert client.get("/v1/devices", headers=headend.auth(headend.op_token)).status_code == 200
    assert client.get("/v1/health").json() == {"status": "ok"}


def test_reset_energy_needs_a_utility_token(client, headend, op):
    headend.meter(client, "meter-a")
    r = op.post("/v1/devices/meter-a/work", json={"op": "reset_energy"})
    assert r.status_code == 403 and "utility" in r.json()["error"]
    assert headend.count("work") == 0
    util = Api(client, headend.util_token)
    w = util.work("meter-a", "reset_energy")
    assert w["role"] == "utility" and w["from"] == "operator:uma"
    assert op.work("meter-a", "read")["role"] == "operator"


def test_token_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "ops", "role": "utility",
                                            "token": "file-token-0123456789"}]}))
    h = Headend(tmp_path, token_file=str(path))
    c = TestClient(h.app)
    h.meter(c, "meter-a")
    w = Api(c, "file-token-0123456789").work("meter-a", "reset_energy")
    assert w["from"] == "operator:ops"


def test_devices_register_list_and_get(client, headend, op, admin):
    r = admin.post("/v1/devices", json={"id": "meter-n"})
    assert r.status_code == 201 and len(r.json()["key"]) == 64 and r.json()["poll"] == 0
    key = "ab" * 16
    assert admin.post("/v1/devices", json={"id": "meter-k", "key": key}).json()["key"] == key
    assert admin.post("/v1/devices", json={"id": "meter-k"}).status_code == 409
    assert admin.post("/v1/devices", json={"id": "bad id"}).status_code == 422
    assert admin.post("/v1/devices", json={"id": "m", "key": "xyz"}).status_code == 422
    assert op.post("/v1/devices", json={"id": "meter-o"}).status_code == 403
    m = FakeMeter(client, "meter-k", key)
    m.presence("available")
    m.exchange()
    devs = {d["id"]: d for d in op.get("/v1/devices").json()}
    assert set(devs) == {"meter-n", "meter-k"}
    assert devs["meter-k"]["presence"] == "available" and devs["meter-k"]["ack"] == 1
    assert devs["meter-n"]["last_contact"] is None
    assert op.get("/v1/devices/nope").status_code == 404


def test_readings_events_results(client, headend, op):
    m = headend.meter(client, "meter-a")
    for v in (229.0, 230.0, 231.0):
        m.reading(v)
    m.add("event", {"kind": "dip", "duration_ms": 110.0, "residual_v": 114.2})
    m.add("notice", {"dropped": 0})
    m.exchange()
    r = op.get("/v1/devices/meter-a/readings?limit=2").json()
    assert [x["body"]["vrms"] for x in r] == [231.0, 230.0] and r[0]["seq"] == 3
    ev = op.get("/v1/devices/meter-a/events").json()
    assert [e["kind"] for e in ev] == ["notice", "event"]
    assert op.get("/v1/devices/meter-a/readings?limit=abc").status_code == 422
    assert op.get("/v1/devices/nope/readings").status_code == 404
    assert op.get("/v1/devices/meter-a/results").json() == []


def test_bad_input_is_4xx_with_an_error(client, headend, op):
    headend.meter(client, "meter-a")
    cases = [
        ("post", "/v1/devices/meter-a/work", {"json": {"op": "read", "args": [1]}}, 422),
        ("post", "/v1/devices/meter-a/work", {"json": {"op": "Bad Op"}}, 422),
        ("post", "/v1/devices/meter-a/work", {"json": {"op": "read", "expires_in": 0}}, 422),
        ("post", "/v1/devices/meter-a/work", {"content": b"{not json",
                                              "headers": {"Content-Type": "application/json"}},
         422),
        ("post", "/v1/devices/nope/work", {"json": {"op": "read"}}, 404),
        ("get", "/v1/work/w-123", {}, 404),
        ("get", "/v1/work/%00", {}, 404),
        ("patch", "/v1/devices/meter-a", {"json": {"poll": -1}}, 422),
    ]
    for method, path, kw, status in cases:
        if "headers" in kw:
            kw["headers"] = dict(kw["headers"], **headend.auth(headend.op_token))
            r = getattr(client, method)(path, **kw)
        else:
            r = getattr(op, method)(path, **kw)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]


def test_openapi_lists_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/exchange", "post"), ("/v1/devices", "get"), ("/v1/devices", "post"),
        ("/v1/devices/{device_id}", "get"), ("/v1/devices/{device_id}/work", "post"),
        ("/v1/work/{work_id}", "get"), ("/v1/work/{work_id}", "delete"),
        ("/v1/devices/{device_id}/readings", "get"), ("/v1/devices/{device_id}/events", "get"),
        ("/v1/devices/{device_id}/presence", "get"), ("/v1/presence", "get"),
        ("/v1/groups", "post"), ("/v1/groups/{name}/work", "post"),
        ("/v1/groups/{name}/work/{gid}", "get"),
    ]:
        assert method in paths[path], (path, method)
    schemas = spec["components"]["schemas"]
    req = schemas["ExchangeRequest"]
    assert set(req["required"]) >= {"v", "device", "ts", "nonce", "wait", "room"}
    assert "from" in schemas["WireWork"]["properties"]
    ref = paths["/v1/exchange"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert ref == {"$ref": "#/components/schemas/ExchangeRequest"}
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()
    assert "413" in paths["/v1/exchange"]["post"]["responses"]
