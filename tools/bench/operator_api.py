"""The operator side of the back-channel bench (tools/bench/backchannel.py): submits
work and collects its outcomes, run in the head-end's namespace or over loopback."""

import json
import random
import sys
import threading
import time

# --------------------------------------------------------------------------- the driver
# Runs as a subprocess in the head-end's namespace (`out`), or on the host over loopback:
#   .venv/bin/python -m bench.operator_api '<json args>'
# It plays the operator: sequential long-poll commands, then sequential MQTT commands, in the
# main thread; each group of commands at random moments in a thread of its own (they go to
# other devices).

FINAL = ("done", "rejected", "unknown_op", "expired", "cancelled")


def _record(w):
    return {k: w.get(k) for k in ("id", "status", "created", "delivered_at", "finished_at",
                                  "deliveries", "reason")}


def _drive(raw):
    import httpx

    a = json.loads(raw)

    def client():
        return httpx.Client(base_url=a["url"], timeout=30, trust_env=False,
                            headers={"Authorization": "Bearer %s" % a["token"]})

    def submit(c, device, expires_in):
        r = c.post("/v1/devices/%s/work" % device, json={"op": "read", "args": {},
                                                          "expires_in": expires_in})
        r.raise_for_status()
        return r.json()["id"]

    main = client()
    end = time.monotonic() + 60  # every meter has called in once (and has its `next`)
    for device in a["wait_for"]:
        while not main.get("/v1/devices/%s" % device).json().get("last_contact"):
            if time.monotonic() > end:
                raise SystemExit("driver: %s never called in" % device)
            time.sleep(0.1)

    def random_moments(group, out, err):
        """group["n"] commands at uniformly random moments over the window; then wait
        (bounded by group["drain"]) for their outcomes."""
        try:
            c = client()
            rng = random.Random("%s-%s" % (a["seed"], group["device"]))
            t0 = time.monotonic()
            at = sorted(rng.uniform(0, a["window"]) for _ in range(group["n"]))
            ids = []
            for t in at:
                time.sleep(max(0.0, t0 + t - time.monotonic()))
                ids.append(submit(c, group["device"], 600))
            stop = time.monotonic() + group["drain"]
            while True:
                works = [c.get("/v1/work/%s" % i).json() for i in ids]
                if all(w["status"] in FINAL for w in works) or time.monotonic() > stop:
                    break
                time.sleep(0.5)
            out.extend(_record(w) for w in works)
        except Exception as e:  # reported by the parent
            err.append("%s: %s" % (type(e).__name__, e))

    results = {g["name"]: [] for g in a["random"]}
    errors = {g["name"]: [] for g in a["random"]}
    threads = [threading.Thread(target=random_moments, daemon=True,
                                args=(g, results[g["name"]], errors[g["name"]]))
               for g in a["random"] if g["n"]]
    for t in threads:
        t.start()

    # sequential commands with a random 0-100 ms pause before each, so they land at random
    # points of the meter's cycle (mid long-poll, between exchanges, ...): first to the
    # long-polling HTTP meter, then (one at a time, so neither disturbs the other) to the
    # MQTT meter, whose work the bridge pushes
    def sequential(device, n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(a["warmup"] + n):
            time.sleep(rng.uniform(0, 0.1))
            wid = submit(main, device, 60)
            stop = time.monotonic() + 30
            while True:
                time.sleep(0.01)
                w = main.get("/v1/work/%s" % wid).json()
                if w["status"] in FINAL or time.monotonic() > stop:
                    break
            if i >= a["warmup"]:
                out.append(_record(w))
        return out

    lp_out = sequential(a["lp_device"], a["lp_n"], a["seed"])
    mq_out = sequential(a["mq_device"], a["mq_n"], "%s-mqtt" % a["seed"]) \
        if a.get("mq_device") else []
    for t in threads:
        t.join()
    print(json.dumps({"lp": lp_out, "mqtt": mq_out, "random": results, "errors": errors}),
          flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_drive(sys.argv[1]))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the bench tears down
        sys.exit(130)
