"""The scale bench's store ceiling (tools/bench/scale.py): the exchange core alone, in
process, on a fresh SQLite file."""

import asyncio
import json
import os
import tempfile
import time


def store_ceiling(seconds=3.0, devices_n=1000, concurrency=32):
    """Exchanges/s through the exchange core (authenticate + store + deliver, wait 0, one
    reading each) against a fresh SQLite file, in this process: the store's ceiling without
    HTTP. `concurrency` exchanges are in flight at once (distinct meters), as on a busy
    head-end, so their commits share fsyncs (group commit). Also bytes per stored reading."""
    from headend import exchange, settings, signing
    from headend.db import Database
    from headend.hub import Hub
    with tempfile.TemporaryDirectory(prefix="bc-store-") as tmp:
        path = os.path.join(tmp, "store.db")
        from bench.scale import register
        keys, _ = register(path, devices_n)
        hub = Hub(settings.Settings(db=path), Database(path))
        seqs = dict.fromkeys(keys, 0)
        devs = list(keys)
        count = [0]

        async def worker(k, end):
            i = k
            while time.perf_counter() < end:
                dev = devs[i % len(devs)]
                i += concurrency
                seqs[dev] += 1
                body = json.dumps({"v": 2, "device": dev, "epoch": "0" * 16, "ts": int(time.time()),
                                   "nonce": os.urandom(8).hex(), "wait": 0, "room": 4,
                                   "done": [], "items": [{"seq": seqs[dev], "kind": "reading",
                                   "body": {"t": time.time(), "vrms": 230.1, "irms": 4.2,
                                            "p": 918.0, "q": 120.5, "s": 966.4, "pf": 0.95,
                                            "f": 50.0, "import_wh": 1234.5}}]},
                                  separators=(",", ":")).encode()
                await exchange.handle(hub, body, signing.sign(keys[dev], body), "mqtt")
                count[0] += 1

        async def go():
            hub.loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(k, t0 + seconds) for k in range(concurrency)))
            return count[0] / (time.perf_counter() - t0)

        rate = asyncio.run(go())
        fsyncs = hub.group_commit.fsyncs
        hub.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        hub.db.close()
        size = os.path.getsize(path)
        return {"store_exchanges_s": rate, "store_bytes_per_exchange": size / count[0],
                "store_exchanges": count[0], "store_fsyncs": fsyncs,
                "store_concurrency": concurrency}
