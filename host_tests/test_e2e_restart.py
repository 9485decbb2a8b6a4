"""End-to-end scenario 9 (docs/e2e.md), over the messaging transports only (xmpp, email):
the server between the meters and the head-end, outside the sites' firewalls, restarts
mid-run. Shares the lab, head-end, server and meters of test_e2e.py (the session fixture
`env`; e2e_env.selected keeps this one to xmpp and email)."""

import time

import pytest
from e2e_env import METERS, REPORT_S, read_result

from headend.meter_time import record_time

pytestmark = pytest.mark.root

OUTAGE_S = 5


def test_9_server_restart_loses_and_duplicates_nothing(env, record_property):
    """9. The messaging server restarts mid-run: nothing is lost and nothing runs twice.

    The server in `out` (Prosody for xmpp; postfix and dovecot for email) is stopped with
    both meters metering. An operator `read` for A queued while it is down does not run
    (there is no path to A). After OUTAGE_S the server starts again: the meters reconnect
    through their firewalls, A's read is done, once, and each meter's readings cover the
    outage at one a second (none missing, no seq and no time twice)."""
    device = "meter-a"
    since = time.time()
    env.server.stop()
    try:
        wid = env.queue(device, "read", expires_in=300)
        time.sleep(OUTAGE_S)
        w = env.work(wid)
        assert w["status"] in ("queued", "delivered") and w["result"] is None, w
    finally:
        env.server.start()
    back = time.time()
    w = env.finished(wid, timeout=120)
    assert w["status"] == "done" and read_result(w["result"]), w
    took = w["finished_at"] - back
    now = time.time()
    for name in METERS:
        env.wait(lambda n=name: max(record_time(r["body"]) for r in env.readings(n))
                 >= now - 2 * REPORT_S, 90, "%s's readings from after the restart" % name)
    counts = []
    for name in METERS:
        rows = env.readings(name)
        seqs = [r["seq"] for r in rows]
        times = sorted(record_time(r["body"]) for r in rows)
        assert len(seqs) == len(set(seqs)), (name, "a seq stored twice")
        assert len(times) == len(set(times)), (name, "a reading stored twice")
        window = [t for t in times if since - 2 * REPORT_S <= t <= now]
        gaps = [round(b - a, 2) for a, b in zip(window, window[1:]) if b - a > 1.5 * REPORT_S]
        assert not gaps, (name, "readings missing across the restart: gaps of %s s" % gaps)
        counts.append(len(window))
    results = [body.get("work") for kind, body in env.stored_items(device).values()
               if kind == "result"]
    assert results.count(wid) == 1, ("the read ran %d times" % results.count(wid))
    record_property("evidence", "server down %.0f s; A's read done once %.1f s after the "
                    "restart; %s readings across it, none missing or twice"
                    % (back - since, took, "+".join(map(str, counts))))
