"""Crash safety: the head-end as a real uvicorn subprocess on 127.0.0.1; work acknowledged
with 202 survives kill -9 and is delivered after a restart on the same database."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from headend_fake_meter import FakeMeter

pytestmark = pytest.mark.system

CLI = [sys.executable, "-m", "headend"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(*argv):
    p = subprocess.run(CLI + list(argv), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def start(db):
    port = free_port()
    proc = subprocess.Popen(CLI + ["serve", "--db", db, "--host", "127.0.0.1", "--port",
                                   str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)


def test_queued_work_survives_kill_9(tmp_path):
    db = str(tmp_path / "crash.db")
    key = admin("add-device", "meter-a", "--db", db)
    token = admin("add-token", "alice", "--role", "operator", "--db", db)
    auth = {"Authorization": "Bearer " + token}
    proc, url = start(db)
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=10) as c:
            ids = [c.post("/v1/devices/meter-a/work", json={"op": "read"}).json()["id"]
                   for _ in range(3)]
            r = c.post("/v1/devices/meter-a/work", json={"op": "get_config"})
            assert r.status_code == 202
            ids.append(r.json()["id"])
            m = FakeMeter(c, "meter-a", key)
            epoch = m.epoch
            m.reading()
            assert m.exchange(room=1)["work"][0]["id"] == ids[0]   # delivered, not done
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    proc, url = start(db)
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=10) as c:
            states = [c.get("/v1/work/%s" % i).json()["status"] for i in ids]
            assert states == ["delivered", "queued", "queued", "queued"]
            m = FakeMeter(c, "meter-a", key, first_seq=2, epoch=epoch)   # the same outbox
            body = m.exchange(room=10)
            assert [w["id"] for w in body["work"]] == ids     # redelivered + the queued ones
            assert body["ack"] == 1                              # the stored reading survived
            m.execute(body["work"])
            m.exchange()
            assert {c.get("/v1/work/%s" % i).json()["status"] for i in ids} == {"done"}
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
