"""Group commit (tools/headend/group_commit.py): concurrent exchanges share one WAL fsync, and
none is answered before its items are on disk.

The oracle for "on disk" is a copy of the database files taken when each fsync starts:
everything in that copy was written before the fsync, so it is durable once the fsync
returns. Every answered exchange must find its items (and its nonce) in the copy of the last
fsync that finished before its answer, read back with the sqlite3 module."""

import asyncio
import json
import os
import secrets
import shutil
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from headend_fake_meter import hmac_hex
from headend_harness import Headend
from test_headend_crash import start

from headend import devices, exchange  # noqa: E402
from headend.db import Database  # noqa: E402

pytestmark = pytest.mark.system

K = 12


def body(device, seqs, wait=0):
    return json.dumps({"v": 2, "device": device, "epoch": "0" * 16, "ts": time.time(),
                       "nonce": secrets.token_hex(8), "wait": wait, "room": 4, "done": [],
                       "items": [{"seq": s, "kind": "reading", "body": {"vrms": 230.0 + s}}
                                 for s in seqs]}).encode()


def stored(path, device):
    conn = sqlite3.connect(str(path))
    try:
        return [r[0] for r in conn.execute(
            "SELECT seq FROM items WHERE device = ? ORDER BY seq", (device,))]
    finally:
        conn.close()


def test_concurrent_exchanges_share_fsyncs_and_are_durable_before_answers(tmp_path):
    he = Headend(tmp_path)
    hub, db = he.hub, he.hub.db
    keys = {"m%02d" % i: devices.create(db, "m%02d" % i) for i in range(K)}
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    finished = []                 # snapshot dirs of the fsyncs that have returned, in order
    release_first = threading.Event()
    real_sync = db.sync_wal

    def spy_sync():
        n = len(list(snaps.iterdir()))
        snap = snaps / str(n)
        snap.mkdir()
        for suffix in ("", "-wal"):
            src = db.path + suffix
            if os.path.exists(src):
                shutil.copyfile(src, str(snap / ("headend.db" + suffix)))
        if n == 0:
            release_first.wait(30)   # hold the first fsync until every exchange is waiting
        real_sync()
        finished.append(snap)

    db.sync_wal = spy_sync
    answered = {}

    async def one(device):
        raw = body(device, [1, 2, 3])
        req, key, answer = await exchange.handle(hub, raw, hmac_hex(keys[device], raw), "http",
                                                 receive=None)
        assert finished, "%s was answered before any fsync finished" % device
        answered[device] = (answer["ack"], finished[-1])

    async def release_when_all_wait():
        while len(hub.group_commit._waiters) < K:
            await asyncio.sleep(0)
        release_first.set()

    async def main():
        hub.loop = asyncio.get_running_loop()
        await asyncio.gather(release_when_all_wait(), *(one(d) for d in keys))

    asyncio.run(main())
    assert sorted(answered) == sorted(keys)
    assert hub.group_commit.fsyncs == 2, "all but the first exchange share the second fsync"
    for device, (ack, snap) in answered.items():
        assert ack == 3
        assert stored(snap / "headend.db", device) == [1, 2, 3], (device, snap.name)


def test_refused_exchange_in_a_batch_leaves_the_others(tmp_path):
    he = Headend(tmp_path)
    hub, db = he.hub, he.hub.db
    keys = {d: devices.create(db, d) for d in ("a", "b", "c")}
    replayed = body("b", [1])
    results = {}

    async def one(device, raw):
        try:
            out = await exchange.handle(hub, raw, hmac_hex(keys[device], raw), "http")
            results.setdefault(device, []).append(out[2]["ack"])
        except exchange.Refused as e:
            results.setdefault(device, []).append(e.status)

    async def main():
        hub.loop = asyncio.get_running_loop()
        await asyncio.gather(one("a", body("a", [1, 2])), one("b", replayed),
                             one("b", replayed), one("c", body("c", [1])))

    asyncio.run(main())
    assert {d: sorted(r) for d, r in results.items()} == {"a": [2], "b": [1, 409], "c": [1]}
    path = tmp_path / "headend.db"
    assert (stored(path, "a"), stored(path, "b"), stored(path, "c")) == ([1, 2], [1], [1])


def test_answered_exchanges_survive_kill_9(tmp_path):
    """Real `backchannel serve`; K meters exchange at once, then kill -9 right after the last
    answer: every acked item is in the database file afterwards."""
    path = str(tmp_path / "crash.db")
    setup = Database(path)
    keys = {"m%02d" % i: devices.create(setup, "m%02d" % i) for i in range(K)}
    setup.close()
    proc, url = start(path)
    acks = {}
    try:
        def post(device):
            raw = body(device, [1, 2, 3, 4])
            with httpx.Client(base_url=url, timeout=20) as c:
                r = c.post("/v1/exchange", content=raw,
                           headers={"X-BC-Signature": hmac_hex(keys[device], raw)})
            assert r.status_code == 200, r.text
            assert r.headers["x-bc-signature"] == hmac_hex(keys[device], r.content)
            return device, r.json()["ack"]

        with ThreadPoolExecutor(K) as pool:
            acks = dict(pool.map(post, keys))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert acks == dict.fromkeys(keys, 4)
    for device in keys:
        assert stored(path, device) == [1, 2, 3, 4], device
