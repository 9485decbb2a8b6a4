"""`backchannel update GROUP --version V` through a real head-end: scripted fake meters
that fetch every chunk through real exchanges (one held while available_restricted), a
rejection, a timeout, and, once the meter side is on the branch, real sim meters."""

import hashlib
import os

import httpx
import pytest
from headend_harness import Api, headend, server  # noqa: F401
from headend_ota_fixtures import bc, publish, release, served, start_update, until_update_work  # noqa: F401
from headend_ota_meter import OtaMeter

from headend import devices
from lab import runner
from lab.processes import Headend as HeadendProcess
from lab.processes import wait_until

pytestmark = pytest.mark.system


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


def test_update_cli_updates_real_meters(tmp_path, bc):
    """The whole chain: release keygen/sign/publish, a real head-end process, two sim meters
    (the firmware app on the MicroPython unix port) and `backchannel update`: each meter
    downloads through fetch/chunk, reboots into the release and confirms it."""
    from lab.processes import Meter
    src = tmp_path / "src"
    src.mkdir()
    version_py = (runner.FIRMWARE / "version.py").read_text()
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
