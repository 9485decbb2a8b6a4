"""Signed firmware updates, head-end side (docs/ota.md): `release keygen|sign|publish`
checked against the `cryptography` package, `fetch`/`chunk` on real exchanges, `update`
progress items, and `backchannel update` driving scripted fake meters through a real
head-end process."""

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys

import fw
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from headend_fake_meter import FakeMeter, hmac_hex
from headend_harness import ROOT, Api, headend, http, server  # noqa: F401
from headend_ota_meter import OtaMeter, verify_sig
from system import Headend as HeadendProcess, wait_until
from test_headend_mqtt import make_site, pytestmark as needs_mosquitto  # noqa: F401

from headend import devices
from headend.cli import main

CLI = [sys.executable, str(ROOT / "tools" / "backchannel")]


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture
def bc(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    return lambda *argv: run(capsys, *argv)


def source_tree(root):
    """A small firmware tree: modules, a sub-package, a binary file, a __pycache__."""
    files = {"app.py": b"print('v2')\n" * 700, "lib/util.py": b"X = 1\n",
             "lib/data.bin": os.urandom(20000), "z_last.mpy": b"M\x06" + os.urandom(9000)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    return files


@pytest.fixture
def release(tmp_path, bc):
    """keygen + sign 1.2.0 of a source tree into tmp/out; (keys dir, src files, out dir)."""
    src = tmp_path / "src"
    files = source_tree(src)
    rc, out, err = bc("release", "keygen", "--out", tmp_path / "keys")
    assert rc == 0, err
    rc, out, err = bc("release", "sign", "--key", tmp_path / "keys" / "release-key.pem",
                      "--version", "1.2.0", src, "--out", tmp_path / "out")
    assert rc == 0 and "signed 1.2.0: 4 file(s)" in out, err
    return tmp_path / "keys", files, tmp_path / "out"


def publish(bc, keys, release_dir, releases_dir):
    return bc("release", "publish", release_dir, "--pub", keys / "release-key.pub",
              "--releases", releases_dir)


# --- keys, signing, publishing ---

def test_keygen_sign_publish_round_trip(tmp_path, bc, release):
    keys, files, out = release
    pem = keys / "release-key.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(private.curve, ec.SECP256R1)
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")      # PKCS#8
    pub_hex = (keys / "release-key.pub").read_text().strip()
    assert len(pub_hex) == 130 and pub_hex == private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()

    rel = out / "1.2.0"
    text = (rel / "manifest.json").read_text()
    expected = {"files": [{"len": len(files[p]), "path": p,
                           "sha256": hashlib.sha256(files[p]).hexdigest()}
                          for p in sorted(files)], "version": "1.2.0"}
    assert text == json.dumps(expected, sort_keys=True, separators=(",", ":"))
    sig = (rel / "manifest.sig").read_text().strip()
    assert len(sig) == 128 and verify_sig(pub_hex, text.encode(), sig)
    assert not verify_sig(pub_hex, text.replace("1.2.0", "1.2.1").encode(), sig)
    for p, data in files.items():
        assert (rel / p).read_bytes() == data
    assert not (rel / "__pycache__").exists()

    rc, msg, err = publish(bc, keys, rel, tmp_path / "served")
    assert rc == 0 and "published 1.2.0" in msg, err
    served = tmp_path / "served" / "1.2.0"
    assert sorted(str(p.relative_to(served)) for p in served.rglob("*") if p.is_file()) == \
        sorted(list(files) + ["manifest.json", "manifest.sig"])
    assert (served / "manifest.json").read_text() == text
    assert all((served / p).read_bytes() == d for p, d in files.items())
    rc, msg, _ = publish(bc, keys, rel, tmp_path / "served")
    assert rc == 0 and "already published" in msg


def test_image_release(tmp_path, bc, release):
    keys, _, out = release
    image = tmp_path / "app.bin"
    image.write_bytes(os.urandom(70000))
    rc, msg, err = bc("release", "sign", "--key", keys / "release-key.pem", "--version",
                      "2.0.0", "--image", image, "--out", out)
    assert rc == 0, err
    text = (out / "2.0.0" / "manifest.json").read_text()
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert text == '{"image":{"len":70000,"sha256":"%s"},"version":"2.0.0"}' % digest
    assert (out / "2.0.0" / "firmware.bin").read_bytes() == image.read_bytes()
    pub = (keys / "release-key.pub").read_text()
    assert verify_sig(pub, text.encode(), (out / "2.0.0" / "manifest.sig").read_text().strip())
    assert publish(bc, keys, out / "2.0.0", tmp_path / "served")[0] == 0


@pytest.mark.parametrize("tamper,message", [
    (lambda r: (r / "app.py").write_bytes(b"evil()\n"), "app.py does not match the manifest"),
    (lambda r: (r / "lib" / "util.py").unlink(), "lib/util.py: No such file"),
    (lambda r: (r / "manifest.json").write_text(
        (r / "manifest.json").read_text().replace('"len":6,', '"len":7,')), "bad signature"),
    (lambda r: (r / "manifest.sig").write_text("00" * 64), "bad signature"),
    (lambda r: (r / "manifest.sig").unlink(), "manifest.sig: No such file"),
])
def test_publish_refuses_a_tampered_release(tmp_path, bc, release, tamper, message):
    keys, _, out = release
    tamper(out / "1.2.0")
    rc, msg, err = publish(bc, keys, out / "1.2.0", tmp_path / "served")
    assert rc == 1 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "served" / "1.2.0").exists()
    assert not [p for p in (tmp_path / "served").iterdir()] if (tmp_path / "served").exists() \
        else True


def test_publish_refuses_another_key(tmp_path, bc, release):
    keys, _, out = release
    assert bc("release", "keygen", "--out", tmp_path / "other")[0] == 0
    rc, _, err = publish(bc, tmp_path / "other", out / "1.2.0", tmp_path / "served")
    assert rc == 1 and "bad signature" in err


def test_release_errors_are_one_line(tmp_path, bc, release):
    keys, _, out = release
    pem = keys / "release-key.pem"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad name.py").write_text("x")
    (tmp_path / "reserved").mkdir()
    (tmp_path / "reserved" / "manifest.json").write_text("{}")
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / ("x" * 62 + ".py")).write_text("x")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "big.py").write_bytes(b"#" * ((1 << 20) + 1))
    (tmp_path / "empty.bin").write_bytes(b"")
    cases = [
        (["release", "keygen", "--out", keys], "already exists"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "long", "--out",
          out], "at most 64 characters"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "big", "--out",
          out], "big.py: length 1048577, must be 0 to 1048576 bytes"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", "--image",
          tmp_path / "empty.bin", "--out", out], "firmware.bin: length 0, must be 1 to"),
        (["release", "sign", "--key", tmp_path / "none.pem", "--version", "1.3.0",
          tmp_path / "src", "--out", out], "none.pem: No such file"),
        (["release", "sign", "--key", keys / "release-key.pub", "--version", "1.3.0",
          tmp_path / "src", "--out", out], "not an unencrypted PEM private key"),
        (["release", "sign", "--key", pem, "--version", "1.3", tmp_path / "src", "--out", out],
         "bad version '1.3'"),
        (["release", "sign", "--key", pem, "--version", "1.03.0", tmp_path / "src", "--out",
          out], "bad version"),
        (["release", "sign", "--key", pem, "--version", "../x", tmp_path / "src", "--out",
          out], "bad version"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "bad", "--out",
          out], "unsafe file name 'bad name.py'"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "reserved",
          "--out", out], "manifest.json is reserved"),
        (["release", "sign", "--key", pem, "--version", "1.2.0", tmp_path / "src", "--out",
          out], "1.2.0 already exists"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", "--out", out],
         "either SRC_DIR or --image"),
        (["release", "publish", out / "1.2.0", "--pub", tmp_path / "none.pub"], "No such file"),
        (["release", "publish", out / "1.2.0", "--pub", pem], "expected 130 hex chars"),
    ]
    for argv, message in cases:
        rc, _, err = bc(*argv)
        assert rc != 0 and message in err, (argv, err)
        assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["1.2.0"]     # nothing half-written


METER_CHECK = """
import sys
import fw_manifest
key, path, sig, running = sys.argv[1:5]
with open(path) as f:
    text = f.read()
try:
    m = fw_manifest.check(key, text, sig, running)
    print("ok %s %d" % (m["version"], len(m["files"])))
except fw_manifest.Refused as e:
    print("refused %s" % e)
"""


@pytest.mark.skipif(not (fw.FIRMWARE / "fw_manifest.py").exists(),
                    reason="the meter side (firmware/fw_manifest.py) is not on this branch")
def test_the_meter_accepts_what_release_sign_signs(tmp_path, bc, release, interpreter):
    """The meter's own check (firmware/fw_manifest.py, p256.py) under MicroPython and
    CPython: the signed manifests pass, a changed one or another key does not."""
    keys, _, out = release
    image = tmp_path / "app.bin"
    image.write_bytes(os.urandom(5000))
    assert bc("release", "sign", "--key", keys / "release-key.pem", "--version", "2.0.0",
              "--image", image, "--out", out)[0] == 0
    assert bc("release", "keygen", "--out", tmp_path / "other")[0] == 0
    script = tmp_path / "check.py"
    script.write_text(METER_CHECK)
    pub = (keys / "release-key.pub").read_text().strip()
    other = (tmp_path / "other" / "release-key.pub").read_text().strip()
    changed = tmp_path / "changed.json"
    changed.write_text((out / "1.2.0" / "manifest.json").read_text().replace('"len":6', '"len":5'))

    def check(key, manifest, version):
        sig = (out / version / "manifest.sig").read_text().strip()
        return fw.run(interpreter, script, key, str(manifest), sig, "1.0.0").strip()
    assert check(pub, out / "1.2.0" / "manifest.json", "1.2.0") == "ok 1.2.0 4"
    assert check(pub, out / "2.0.0" / "manifest.json", "2.0.0") == "ok 2.0.0 1"
    assert check(pub, changed, "1.2.0") == "refused bad signature"
    assert check(other, out / "1.2.0" / "manifest.json", "1.2.0") == "refused bad signature"


# --- fetch / chunk on the exchange ---

@pytest.fixture
def served(tmp_path, bc, release, headend):
    """1.2.0 published where the head-end serves it by default (`releases` by its db)."""
    keys, files, out = release
    assert publish(bc, keys, out / "1.2.0", tmp_path / "releases")[0] == 0
    return files


def fetch(meter, **want):
    body = meter.envelope()
    body["fetch"] = want
    r = meter.post(body)
    assert r.status_code == 200, r.text
    assert r.headers["x-bc-signature"] == hmac_hex(meter.key, r.content)   # chunk is signed
    return r.json()["chunk"]


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


# --- `backchannel update` ---

def start_update(url, token, *argv):
    env = dict(os.environ, BACKCHANNEL_URL=url, BACKCHANNEL_TOKEN=token, COLUMNS="200")
    return subprocess.Popen(CLI + ["update", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def until_update_work(meter):
    wait_until(lambda: meter.step() and meter.update_work, 30,
               "the update work for %s" % meter.device)


def test_update_cli_installs_on_a_group_holding_restricted_meters(tmp_path, bc, release):
    keys, files, out = release
    assert publish(bc, keys, out / "1.2.0", tmp_path / "served")[0] == 0
    pub = (keys / "release-key.pub").read_text().strip()
    he = HeadendProcess(tmp_path, extra=["--releases", str(tmp_path / "served"),
                                         "--log-level", "warning"]).start()
    proc = None
    try:
        token = he.add_token("alice", "operator")
        op = he.api(token)
        http = httpx.Client(base_url=he.url, timeout=30)
        a = OtaMeter(http, "m-a", he.add_device("m-a"), pub, chunk_len=5000)
        b = OtaMeter(http, "m-b", he.add_device("m-b"), pub)
        a.presence("available_restricted", "critical process until 13:03")
        b.presence("available")
        a.step()
        b.step()
        assert op.post("/v1/groups", json={"name": "feeder", "members": ["m-a", "m-b"]}
                       ).status_code == 201
        proc = start_update(he.url, token, "feeder", "--version", "1.2.0", "--timeout", "300",
                            "--interval", "0.1")
        until_update_work(b)
        assert a.step()["work"] == [] and a.update_work == []
        assert b.download() and b.files == files
        assert a.step()["work"] == []                       # still restricted: still held
        gid = op.get("/v1/devices/m-a/work").json()[0]["group"]
        s = op.get("/v1/groups/feeder/work/%d" % gid).json()
        assert {m: o["status"] for m, o in s["outcomes"].items()} == {"m-a": "held",
                                                                       "m-b": "done"}
        assert proc.poll() is None                           # m-a has not finished
        a.presence("available")
        (w,) = a.step()["work"]                               # available: sent at once
        assert w["op"] == "update" and a.update_work == [w["id"]]
        assert a.download() and a.files == files
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert "update 1.2.0 -> group feeder: command %d, 2 meter(s)" % gid in stdout
        lines = stdout.splitlines()
        assert "m-a: held" in lines and "m-b: installed" in lines and "m-a: installed" in lines
        table = [ln for ln in lines if ln.startswith("│ m-")]
        assert len(table) == 2 and all("installed" in ln for ln in table), stdout
        rows = op.get("/v1/updates", params={"version": "1.2.0"}).json()
        assert [(u["device"], u["state"]) for u in rows] == [("m-a", "installed"),
                                                             ("m-b", "installed")]
        assert [s for s, _ in b.reported] == ["downloading"] * 11 + [
            "verified", "installing", "installed"]
        assert [p for s, p in b.reported if s == "downloading"] == list(range(0, 101, 10))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        he.kill()


def test_update_cli_reports_a_rejection_and_exits_1(served, headend, server, tmp_path):
    pub = (tmp_path / "keys" / "release-key.pub").read_text().strip()
    op = Api(httpx.Client(base_url=server.url, timeout=30), headend.op_token)
    http = httpx.Client(base_url=server.url, timeout=30)
    c = OtaMeter(http, "m-c", devices.create(headend.hub.db, "m-c"), pub, running="1.2.0")
    c.presence("available")
    c.step()
    op.post("/v1/groups", json={"name": "g", "members": ["m-c"]})
    proc = start_update(server.url, headend.op_token, "g", "--version", "1.2.0",
                        "--interval", "0.1", "--timeout", "300")
    try:
        until_update_work(c)
        c.step()                                           # delivers the rejection
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "version downgrade: running 1.2.0, offered 1.2.0" in stdout
    assert stderr == ("backchannel: error: 1 of 1 meter(s) did not install 1.2.0: "
                      "m-c rejected\n")


def test_update_cli_times_out_no_wait_and_errors(served, headend, server):
    http = httpx.Client(base_url=server.url, timeout=30)
    meter = headend.meter(http, "m-e")
    meter.presence("available")
    meter.exchange()
    Api(http, headend.op_token).post("/v1/groups", json={"name": "g", "members": ["m-e"]})
    proc = start_update(server.url, headend.op_token, "g", "--version", "1.2.0",
                        "--timeout", "0.5", "--interval", "0.1")
    stdout, stderr = proc.communicate(timeout=60)     # the meter never calls in again
    assert proc.returncode == 1 and "m-e: queued" in stdout
    assert stderr == ("backchannel: error: 1 of 1 meter(s) did not install 1.2.0 "
                      "(timed out): m-e queued\n")
    proc = start_update(server.url, headend.op_token, "g", "--version", "1.2.0", "--no-wait")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stdout.startswith("update 1.2.0 -> group g: command 2")
    (first, second) = [w for w in meter.exchange()["work"]]
    assert first["op"] == second["op"] == "update"
    for argv, message in [(["g", "--version", "1.2"], "bad version '1.2'"),
                          (["g", "--version", "1.3.0"], "HTTP 404: no published release 1.3.0"),
                          (["nope", "--version", "1.2.0"], "HTTP 404: unknown group nope")]:
        proc = start_update(server.url, headend.op_token, *argv)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1 and stderr.startswith("backchannel: error: "), stderr
        assert message in stderr and stderr.count("\n") == 1, stderr


@pytest.mark.skipif(not (fw.FIRMWARE / "updater.py").exists(),
                    reason="the meter side (firmware/updater.py) is not on this branch")
def test_update_cli_updates_real_meters(tmp_path, bc):
    """The whole chain: release keygen/sign/publish, a real head-end process, two sim meters
    (the firmware app on the MicroPython unix port) and `backchannel update`: each meter
    downloads through fetch/chunk, reboots into the release and confirms it."""
    from system import Meter
    src = tmp_path / "src"
    src.mkdir()
    version_py = (fw.FIRMWARE / "version.py").read_text()
    (src / "version.py").write_text(version_py.replace('VERSION = "0.1.0"', 'VERSION = "1.2.0"'))
    blob = os.urandom(20000)                  # several chunks
    (src / "blob.bin").write_bytes(blob)
    assert bc("release", "keygen", "--out", tmp_path / "keys")[0] == 0
    assert bc("release", "sign", "--key", tmp_path / "keys" / "release-key.pem", "--version",
              "1.2.0", src, "--out", tmp_path / "out")[0] == 0
    he = HeadendProcess(tmp_path, extra=["--log-level", "warning"])
    assert bc("release", "publish", tmp_path / "out" / "1.2.0", "--pub",
              tmp_path / "keys" / "release-key.pub", "--db", he.db)[0] == 0
    pub = (tmp_path / "keys" / "release-key.pub").read_text().strip()
    he.start()
    meters = []
    try:
        token = he.add_token("alice", "operator")
        op = he.api(token)
        for name in ("sim-1", "sim-2"):
            meters.append(Meter(tmp_path, name, he.add_device(name), he.url,
                                update_key=pub).start())
        wait_until(lambda: all(d["presence"] == "available"
                               for d in op.get("/v1/devices").json()), 60, "both meters")
        op.post("/v1/groups", json={"name": "sims", "members": ["sim-1", "sim-2"]})
        proc = start_update(he.url, token, "sims", "--version", "1.2.0", "--timeout", "240",
                            "--interval", "0.2")
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout + stderr
        assert [ln.split()[1:6:4] for ln in stdout.splitlines() if ln.startswith("│ sim-")] \
            == [["sim-1", "installed"], ["sim-2", "installed"]]
        for m in meters:
            staged = m.dir / "fw" / "1.2.0" / "blob.bin"
            assert hashlib.sha256(staged.read_bytes()).digest() == hashlib.sha256(blob).digest()
        devs = {d["id"]: d["firmware"] for d in op.get("/v1/devices").json()}
        assert all(f["installed"] == "1.2.0" for f in devs.values()), devs
    finally:
        for m in meters:
            m.kill()
        he.kill()
