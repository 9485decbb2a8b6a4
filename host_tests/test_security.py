"""Security checks: each attack is refused with a clear error, and counted.

Forged signatures, replayed exchanges, replayed work (run once by the meter, also after a
reboot, under CPython and MicroPython), stale and future timestamps, an unknown device, a
meter using another meter's id (HTTP and the MQTT topic check), an operator token for a
utility-only op, oversized bodies (declared and streamed) and slow-loris connections to a
real uvicorn server. Every refusal is recorded in REPORT as (check, status, error); with
BC_SECURITY_REPORT set the counts are appended to that file as JSON lines (tools/fuzz
--report prints them). docs/security.md describes the checks.
"""

import collections
import json
import os
import socket
import threading
import time
from pathlib import Path

import envelope
import fuzz_parsers as fz
import httpx
import ops
import pytest
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter, hmac_hex
from headend_harness import GuardedServer, Headend
from inbox import Inbox

from headend import exchange
from lab import runner

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.system

REPORT = collections.Counter()      # (check, outcome) -> count


def refused(check, response, status, reason):
    """Assert an HTTP refusal with its status and a clear {"error"} naming the reason."""
    assert response.status_code == status, (check, response.status_code, response.text)
    error = response.json().get("error", "")
    assert reason in error, (check, error)
    REPORT[(check, "%d %s" % (status, error))] += 1


def record(check, outcome):
    REPORT[(check, outcome)] += 1


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("BC_SECURITY_REPORT")
    if path:
        with open(path, "a") as f:
            for (check, outcome), n in sorted(REPORT.items()):
                f.write(json.dumps({"check": check, "outcome": outcome, "count": n}) + "\n")


@pytest.fixture
def he(tmp_path):
    return Headend(tmp_path, max_body=64 * 1024)


@pytest.fixture
def client(he):
    with TestClient(he.app) as c:
        yield c


def stored(he):
    return he.count("items") + he.count("nonces")


def test_forged_signatures(he, client):
    m = he.meter(client, "meter-a")
    other = "ab" * 32
    m.reading()
    body = m.envelope()
    raw = json.dumps(body).encode()
    for check, sig, reason in (("forged signature", hmac_hex(other, raw), "bad signature"),
                               ("garbage signature", "zz" * 32, "malformed signature"),
                               ("missing signature", False, "missing signature"),
                               ("truncated signature", hmac_hex(m.key, raw)[:-2],
                                "malformed signature")):
        refused(check, m.post(body, sig=sig, raw=raw), 401, reason)
    # a body changed after signing
    tampered = raw.replace(b'"room": 4', b'"room": 5')
    refused("tampered body", m.post(body, sig=hmac_hex(m.key, raw), raw=tampered), 401,
            "bad signature")
    assert stored(he) == 0, "a refused request stored something"
    m.exchange()                                    # the real one still works


def test_replayed_exchange(he, client):
    m = he.meter(client, "meter-a")
    m.reading()
    body = m.envelope()
    raw = json.dumps(body).encode()
    assert m.post(body, raw=raw).status_code == 200
    items = he.count("items")
    for _ in range(3):
        refused("replayed exchange", m.post(body, raw=raw), 409, "nonce already seen")
    # the same nonce in a freshly signed body (new ts) is still a replay
    again = dict(body, ts=body["ts"] + 1)
    refused("replayed nonce", m.post(again), 409, "nonce already seen")
    assert he.count("items") == items


def test_stale_and_future_timestamps(he, client):
    m = he.meter(client, "meter-a")
    m.reading()
    window = he.settings.replay_window
    for check, dt in (("stale timestamp", -window - 5), ("future timestamp", window + 5),
                      ("ancient timestamp", -10 ** 9)):
        refused(check, m.post(m.envelope(ts=time.time() + dt)), 409, "replay window")
    assert stored(he) == 0
    m.exchange(ts=time.time() - window + 30)        # inside the window: accepted


def test_unknown_device(he, client):
    ghost = FakeMeter(client, "meter-ghost", "cd" * 32)
    ghost.reading()
    refused("unknown device", ghost.post(ghost.envelope()), 401, "unknown device")
    assert stored(he) == 0


def test_meter_using_another_meters_id(he, client):
    a = he.meter(client, "meter-a")
    b = he.meter(client, "meter-b")
    # meter-a signs (with its own key) a request claiming to be meter-b
    impostor = FakeMeter(client, "meter-b", a.key)
    impostor.reading()
    refused("another meter's id", impostor.post(impostor.envelope()), 401, "bad signature")
    assert he.count("items", "meter-b") == 0
    # over MQTT: meter-b's genuinely signed request, published on meter-a's topic
    b.reading()
    raw = json.dumps(b.envelope()).encode()
    with pytest.raises(exchange.Refused) as e:
        exchange.authenticate(he.hub, raw, hmac_hex(b.key, raw), topic_device="meter-a")
    assert e.value.status == 401 and "does not match the topic" in e.value.reason
    record("another meter's topic (MQTT)", "%d %s" % (e.value.status, e.value.reason))


def test_operator_token_for_utility_op(he, client):
    he.meter(client, "meter-a")
    op = {"Authorization": "Bearer %s" % he.op_token}
    util = {"Authorization": "Bearer %s" % he.util_token}
    r = client.post("/v1/devices/meter-a/work", headers=op, json={"op": "reset_energy"})
    refused("operator token, utility op", r, 403, "requires a utility token")
    client.post("/v1/groups", headers=op, json={"name": "g", "members": ["meter-a"]})
    r = client.post("/v1/groups/g/work", headers=op, json={"op": "reset_energy"})
    refused("operator token, utility op (group)", r, 403, "requires a utility token")
    assert he.count("work") == 0
    for check, headers, reason in (("no token", {}, "missing bearer token"),
                                   ("bad token", {"Authorization": "Bearer nope"},
                                    "invalid token")):
        refused(check, client.post("/v1/devices/meter-a/work", headers=headers,
                                   json={"op": "read"}), 401, reason)
    assert client.post("/v1/devices/meter-a/work", headers=util,
                       json={"op": "reset_energy"}).status_code == 202


def test_oversized_bodies(he, client):
    m = he.meter(client, "meter-a")
    limit = he.settings.max_body
    body = m.envelope(items=[{"seq": 1, "kind": "reading", "body": {"pad": "x" * limit}}])
    refused("oversized body", m.post(body), 413, "body larger than")
    # no Content-Length: the body is streamed and cut off at the limit
    raw = json.dumps(body).encode()

    def chunks():
        for i in range(0, len(raw), 4096):
            yield raw[i:i + 4096]

    r = client.post("/v1/exchange", content=chunks(),
                    headers={"X-BC-Signature": hmac_hex(m.key, raw)})
    refused("oversized streamed body", r, 413, "body larger than")
    assert stored(he) == 0


# --- work replayed to the meter ---

def _signed(wid, op="message", args='{"from":"m-2","ref":"r","result":{}}', role="operator",
            seq=None):
    seq = int(wid.split("-")[1]) if seq is None else seq
    item = {"id": wid, "device": fz.DEVICE, "seq": seq, "op": op, "role": role,
            "expires": 2 * 10 ** 9, "from": "operator:al", "args": args}
    item["sig"] = envelope.sign(fz.KEY, envelope.work_message(item))
    return item


def test_replayed_work_runs_once(tmp_path):
    outbox = fz.FakeOutbox()
    app = fz.FakeApp(outbox)
    path = str(tmp_path / "inbox")
    d = ops.Dispatcher(app, fz.KEY, outbox, Inbox(path))
    item = _signed("w-00000007")
    assert d.handle(item) == "done"
    for _ in range(3):
        assert d.handle(dict(item)) == "duplicate"
        record("replayed work", "duplicate, not run")
    assert len(app.messages) == 1, "a replayed work item ran again"
    # after a reboot: the inbox is persisted
    d2 = ops.Dispatcher(fz.FakeApp(outbox), fz.KEY, outbox, Inbox(path))
    assert d2.handle(dict(item)) == "duplicate"
    record("replayed work after reboot", "duplicate, not run")
    assert [r["work"] for k, r in outbox.items if k == "result"] == ["w-00000007"]
    # forged work: a changed arg, another key, a role upgrade
    for check, forged in (
            ("forged work (args changed)", dict(_signed("w-8"), args='{"from":"m-3"}')),
            ("forged work (other key)", dict(_signed("w-9"), sig="00" * 32)),
            ("forged work (role upgraded)", dict(_signed("w-10", "reset_energy", "{}"),
                                                 role="utility"))):
        assert d.handle(forged) == "rejected"
        assert outbox.items[-1][1] == {"work": forged["id"], "status": "rejected",
                                       "reason": "bad signature"}
        record(check, "rejected: bad signature")
    # a genuine operator signature for a utility-only op
    assert d.handle(_signed("w-11", "reset_energy", "{}")) == "rejected"
    assert "may not run" in outbox.items[-1][1]["reason"]
    record("operator work, utility op (meter)", "rejected: " + outbox.items[-1][1]["reason"])


def test_replayed_work_runs_once_micropython(tmp_path):
    cases = [["work", [_signed("w-%d" % (k + 1), op, args), False]]
             for k, (op, args) in enumerate([("message", '{"from":"m-2"}'), ("read", "{}"),
                                             ("relay", '{"state":"open"}'),
                                             ("send", '{"to":"m","op":"read"}')])]
    out = runner.run("micropython", HERE / "mp_scripts" / "fuzz_parsers.py", str(tmp_path),
                 stdin="".join(json.dumps(c) + "\n" for c in cases).encode())
    assert runner.records(out) == ["ok"] * len(cases)   # run_work asserts "duplicate" the 2nd time
    record("replayed work (MicroPython)", "duplicate, not run")


# --- slow-loris against a real uvicorn server ---

def slow_loris(port, n, stop, interval=0.5):
    """n connections that send a request's headers one byte every `interval` seconds.
    Returns (sockets, closed): closed[i] is set when the server closed connection i."""
    socks, closed = [], [False] * n
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    text = b"POST /v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + \
        b"X-Padding: " + b"a" * 10000

    def trickle():
        k = 0
        while not stop.is_set():
            for i, s in enumerate(socks):
                if closed[i]:
                    continue
                try:
                    if s.recv(1024) == b"":
                        closed[i] = True
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    closed[i] = True
                    continue
                try:
                    s.send(text[k % len(text):k % len(text) + 1])
                except OSError:
                    closed[i] = True
            k += 1
            stop.wait(interval)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    return socks, closed, t


SLOW = int(os.environ.get("BC_SLOWLORIS_CONNECTIONS", "300"))


def test_slow_loris(tmp_path):
    he = Headend(tmp_path)
    stop = threading.Event()
    with GuardedServer(he.app, header_timeout=2.0) as srv:
        socks, closed, t = slow_loris(srv.port, SLOW, stop)
        try:
            time.sleep(0.5)
            with httpx.Client(base_url=srv.url, timeout=10) as http:
                m = he.meter(http, "meter-a")
                worst = 0.0
                for _ in range(5):
                    m.reading()
                    t0 = time.monotonic()
                    m.exchange()
                    worst = max(worst, time.monotonic() - t0)
                assert not m.outbox
            assert worst < 1.0, "a real exchange took %.2f s among %d slow-loris connections" % (
                worst, SLOW)
            record("slow-loris: real exchange among %d slow connections" % SLOW,
                   "completed (worst %.0f ms)" % (worst * 1000))
            deadline = time.monotonic() + 6
            while not all(closed) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert all(closed), "%d of %d slow-loris connections still open after the header " \
                "timeout" % (closed.count(False), SLOW)
            record("slow-loris connection", "closed by the header timeout (2 s)")
            REPORT[("slow-loris connection", "closed by the header timeout (2 s)")] += SLOW - 1
            # a slow but legitimate long-poll is not cut: headers done, then it waits
            with httpx.Client(base_url=srv.url, timeout=10) as http:
                m2 = FakeMeter(http, "meter-a", m.key)
                m2.next_seq = m.next_seq
                t0 = time.monotonic()
                m2.exchange(wait=3)
                assert time.monotonic() - t0 > 2.5, "the long-poll did not wait"
        finally:
            stop.set()
            t.join(5)
            for s in socks:
                s.close()
