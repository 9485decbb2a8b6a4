"""`fetch`/`chunk` on real exchanges (HTTP through uvicorn, and the MQTT bridge) and the
meters' `update` progress items in the operator API (docs/ota.md)."""

import base64
import hashlib
import json

import pytest
from headend_fake_meter import hmac_hex
from headend_harness import Api, headend, http, server  # noqa: F401
from headend_ota_fixtures import bc, fetch, publish, release, served  # noqa: F401
from test_headend_mqtt import (
    make_site,  # noqa: F401
    needs_mosquitto,
)

pytestmark = pytest.mark.unit


def test_fetch_serves_exact_bytes_at_offsets(served, headend, http):
    meter = headend.meter(http, "m1")
    data = served["lib/data.bin"]
    got, offset = b"", 0
    while offset < len(data):
        c = fetch(meter, version="1.2.0", path="lib/data.bin", offset=offset, len=3001)
        assert (c["version"], c["path"], c["offset"], c["size"]) == \
            ("1.2.0", "lib/data.bin", offset, len(data))
        piece = base64.b64decode(c["data"])
        assert 0 < len(piece) <= 3001
        got += piece
        offset += len(piece)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    c = fetch(meter, version="1.2.0", path="lib/data.bin", offset=1000, len=100000)
    assert base64.b64decode(c["data"]) == data[1000:1000 + 8192]             # capped
    c = fetch(meter, version="1.2.0", path="lib/data.bin", offset=len(data), len=10)
    assert c["data"] == "" and c["size"] == len(data)
    c = fetch(meter, version="1.2.0", path="app.py", offset=5, len=7)
    assert base64.b64decode(c["data"]) == served["app.py"][5:12]


@pytest.mark.parametrize("version,path,offset,error", [
    ("1.3.0", "app.py", 0, "no such release"),
    ("1.2", "app.py", 0, "no such release"),
    ("1.2.0\n", "app.py", 0, "no such release"),
    ("1.2.0", "app.py\n", 0, "no such file in release"),
    ("../releases/1.2.0", "app.py", 0, "no such release"),
    ("1.2.0", "nope.py", 0, "no such file in release"),
    ("1.2.0", "../../headend.db", 0, "no such file in release"),
    ("1.2.0", "lib/../app.py", 0, "no such file in release"),
    ("1.2.0", "/etc/passwd", 0, "no such file in release"),
    ("1.2.0", "manifest.json", 0, "no such file in release"),
    ("1.2.0", "__pycache__/app.cpython-311.pyc", 0, "no such file in release"),
    ("1.2.0", "app.py", 10 ** 6, "offset beyond the end of the file"),
])
def test_fetch_refuses_what_the_manifest_does_not_list(served, headend, http, version, path,
                                                       offset, error):
    meter = headend.meter(http, "m1")
    c = fetch(meter, version=version, path=path, offset=offset, len=100)
    assert c == {"version": version, "path": path, "error": error}


@pytest.mark.parametrize("want", [
    {"version": "1.2.0", "path": "app.py", "offset": "0", "len": 10},
    {"version": "1.2.0", "path": "app.py", "offset": 0, "len": 10.0},
    {"version": "1.2.0", "path": "app.py", "offset": -1, "len": 10},
    {"version": 120, "path": "app.py", "offset": 0, "len": 10},
    {"version": "1.2.0", "offset": 0, "len": 10},
    "app.py",
])
def test_fetch_is_strictly_typed(served, headend, http, want):
    meter = headend.meter(http, "m1")
    meter.reading()
    body = meter.envelope()
    body["fetch"] = want
    r = meter.post(body)
    assert r.status_code == 400 and "fetch" in r.json()["error"]
    assert headend.count("items", "m1") == 0                      # refused: nothing stored


def test_fetch_is_answered_at_once_with_items_and_work(served, headend, http):
    meter = headend.meter(http, "m1")
    op = Api(http, headend.op_token)
    meter.reading()
    body = meter.envelope(wait=25)           # a long-poll, but a fetch is answered at once
    body["fetch"] = {"version": "1.2.0", "path": "lib/util.py", "offset": 0, "len": 64}
    r = meter.http.post("/v1/exchange", content=json.dumps(body).encode(), timeout=10,
                        headers={"X-BC-Signature": hmac_hex(meter.key, json.dumps(body).encode())})
    assert r.status_code == 200 and r.json()["ack"] == 1 and r.json()["work"] == []
    assert base64.b64decode(r.json()["chunk"]["data"]) == b"X = 1\n"
    w = op.work("m1", "read")
    out = fetch(meter, version="1.2.0", path="lib/util.py", offset=2, len=2)
    assert base64.b64decode(out["data"]) == b"= "
    assert meter.exchange()["work"][0]["id"] == w["id"]       # work rides along as usual


@needs_mosquitto
def test_fetch_and_update_items_pass_through_the_mqtt_bridge(tmp_path, bc, release, make_site):
    keys, files, out = release
    assert publish(bc, keys, out / "1.2.0", tmp_path / "releases")[0] == 0
    site = make_site()
    q = site.mqtt("q1")
    want = {"version": "1.2.0", "path": "lib/data.bin", "offset": 100, "len": 9000}
    envelope = q.envelope
    q.envelope = lambda **kw: dict(envelope(**kw), fetch=want)
    q.add("update", {"version": "1.2.0", "state": "downloading", "percent": 0})
    r = q.exchange()                                   # its signature is checked by q
    assert not q.bad and r["ack"] == 1
    assert (r["chunk"]["offset"], r["chunk"]["size"]) == (100, len(files["lib/data.bin"]))
    assert base64.b64decode(r["chunk"]["data"]) == files["lib/data.bin"][100:100 + 8192]
    want.update(path="../headend.db", offset=0)
    assert q.exchange()["chunk"] == {"version": "1.2.0", "path": "../headend.db",
                                     "error": "no such file in release"}
    (u,) = site.op.get("/v1/updates").json()
    assert (u["device"], u["state"], u["percent"]) == ("q1", "downloading", 0)


# --- update progress items and the operator API ---

def test_update_items_are_ingested_and_listed(served, headend, http):
    meter = headend.meter(http, "m1")
    other = headend.meter(http, "m2")
    op = Api(http, headend.op_token)
    for percent in (0, 10, 20):
        meter.add("update", {"version": "1.2.0", "state": "downloading", "percent": percent})
    meter.add("update", {"version": "1.2.0", "state": "bogus"})               # stored only
    meter.add("update", {"version": "1.2.0\n", "state": "verified"})
    meter.add("update", {"version": "1.2.0", "state": "downloading", "percent": 101})
    meter.exchange()
    (u,) = op.get("/v1/updates", params={"version": "1.2.0"}).json()
    assert (u["device"], u["state"], u["percent"]) == ("m1", "downloading", 20)
    for state in ("verified", "installing", "installed"):
        meter.add("update", {"version": "1.2.0", "state": state})
    other.add("update", {"version": "1.2.0", "state": "rejected", "reason": "hash mismatch"})
    other.add("update", {"version": "1.1.0", "state": "installed"})
    meter.exchange()
    other.exchange()
    rows = op.get("/v1/updates", params={"version": "1.2.0"}).json()
    assert [(u["device"], u["state"], u["reason"]) for u in rows] == [
        ("m1", "installed", None), ("m2", "rejected", "hash mismatch")]
    assert all(isinstance(u["at"], float) for u in rows)
    assert len(op.get("/v1/updates").json()) == 3
    assert [u["version"] for u in op.get("/v1/updates", params={"device": "m2"}).json()] == \
        ["1.1.0", "1.2.0"]
    fw = op.get("/v1/devices/m1").json()["firmware"]
    assert (fw["version"], fw["state"], fw["installed"]) == ("1.2.0", "installed", "1.2.0")
    fw = {d["id"]: d["firmware"] for d in op.get("/v1/devices").json()}["m2"]
    assert (fw["version"], fw["state"], fw["installed"]) == ("1.1.0", "installed", "1.1.0")
    assert http.get("/v1/updates").status_code == 401
    assert op.get("/v1/releases").json() == ["1.2.0"]
    rel = op.get("/v1/releases/1.2.0").json()
    assert rel["kind"] == "files" and [f["path"] for f in rel["files"]] == sorted(served)
    assert op.get("/v1/releases/9.9.9").status_code == 404
    assert op.get("/v1/releases/..").status_code == 404
