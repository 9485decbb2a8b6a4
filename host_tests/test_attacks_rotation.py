"""Key rotation (issue 12, "What to build" 1), as an attacker holding a stolen old key, and an
unlucky field crew, would meet it, through the real head-end and a real MicroPython meter:
only a utility starts it, the old key stops working once the meter has exchanged under the
new one, the meter keeps metering throughout, and a power cut of the meter or the head-end
at any step loses neither key."""

import hashlib
import hmac
import json
import os
import subprocess
import time

import httpx
import pytest

from lab import processes

pytestmark = pytest.mark.system


def _key_on_flash(meter):
    data = meter.config.read_bytes()
    if data[:3] == b"BC1":
        data = data[7:-4]
    return json.loads(data)["device_key"]


def _stolen_request(url, device, key):
    """An exchange request as the holder of `key` would send it: the HTTP status."""
    body = json.dumps({"v": 2, "device": device, "ts": int(time.time()), "epoch": "e" * 16,
                       "nonce": os.urandom(8).hex(), "wait": 0, "room": 0}).encode()
    sig = hmac.new(bytes.fromhex(key), body, hashlib.sha256).hexdigest()
    r = httpx.post(url + "/v1/exchange", content=body, timeout=30,
                   headers={"X-BC-Signature": sig, "Content-Type": "application/json"})
    return r.status_code


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("attack-rotation")
    he = processes.Headend(work)
    key = he.add_device("meter-a")
    op, util = he.add_token("mallory", "operator"), he.add_token("uma", "utility")
    he.start()
    meter = processes.Meter(work, "meter-a", key, he.url).start()
    api = he.api(op)
    processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 30,
                         "the first reading from the meter")
    s = {"he": he, "meter": meter, "api": api, "util": he.api(util), "key": key,
         "tokens": (op, util)}
    yield s
    s["meter"].kill()
    s["he"].kill()


def _rotate(site, timeout=60):
    """Start a rotation; wait until the meter holds a new key on flash. Returns it."""
    old = _key_on_flash(site["meter"])
    r = site["util"].post("/v1/devices/meter-a/rotate-key")
    assert r.status_code == 202, r.text
    processes.wait_until(lambda: _key_on_flash(site["meter"]) != old, timeout,
                         "the meter to commit its new key")
    return _key_on_flash(site["meter"])


def test_only_a_utility_rotates_and_never_as_plain_work(site):
    r = site["api"].post("/v1/devices/meter-a/rotate-key")
    assert r.status_code == 403 and "utility" in r.text
    for api in (site["api"], site["util"]):      # a chosen `pub` would hand over the key
        r = api.post("/v1/devices/meter-a/work",
                     json={"op": "rotate_key", "args": {"rid": "00" * 8, "pub": "04" + "1" * 128}})
        assert r.status_code == 403 and "guarded" in r.text, r.text


def test_a_stolen_old_key_stops_working_after_the_rotation(site):
    old = site["key"]
    assert _stolen_request(site["he"].url, "meter-a", old) == 200     # before: it works
    new = _rotate(site)
    assert new != old
    assert _stolen_request(site["he"].url, "meter-a", old) == 401
    w = processes.run_work(site["api"], "meter-a", "read")     # the meter carries on
    assert w["status"] == "done", w
    audit = site["util"].get("/v1/audit", params={"target": "device:meter-a"})
    if audit.status_code == 200:
        assert any(a["action"] == "rotate_key" and a["outcome"] == "ok"
                   for a in audit.json()), audit.text
    site["key"] = new


def _cli(site, token, *argv):
    env = dict(os.environ, BACKCHANNEL_URL=site["he"].url, BACKCHANNEL_TOKEN=token)
    return subprocess.run([*processes.HEADEND, *argv], capture_output=True, text=True,
                          env=env, timeout=60)


def test_the_utility_rotates_from_the_cli_and_an_operator_is_told_why_not(site):
    op, util = site["tokens"]
    p = _cli(site, op, "rotate-key", "meter-a")
    assert p.returncode != 0 and "utility token" in p.stderr and "Traceback" not in p.stderr
    p = _cli(site, util, "rotate-key", "Meter:A")
    assert p.returncode != 0 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    p = _cli(site, util, "rotate-key", "meter-a")
    assert p.returncode == 0 and "key rotation for meter-a queued as w-" in p.stdout, p.stderr
    processes.wait_until(lambda: _key_on_flash(site["meter"]) != site["key"], 60,
                         "the meter to commit its new key")
    site["key"] = _key_on_flash(site["meter"])


def test_a_second_rotation_while_one_is_in_flight_is_refused(site):
    site["meter"].kill()
    r = site["util"].post("/v1/devices/meter-a/rotate-key")
    assert r.status_code == 202, r.text
    again = site["util"].post("/v1/devices/meter-a/rotate-key")
    assert again.status_code == 409 and "in flight" in again.text
    site["meter"].start()
    processes.wait_until(lambda: _key_on_flash(site["meter"]) != site["key"], 60,
                         "the meter to commit its new key")
    site["key"] = _key_on_flash(site["meter"])
    assert processes.run_work(site["api"], "meter-a", "read")["status"] == "done"


def _final(site, wid, timeout=90):
    return processes.wait_until(
        lambda: (lambda w: w if w["status"] not in ("queued", "delivered") else None)(
            site["api"].get("/v1/work/%s" % wid).json()), timeout, "%s to end" % wid)


@pytest.mark.parametrize("wait_for", ["delivered", "done"])
def test_a_power_cut_of_the_meter_mid_rotation_loses_no_key(site, wait_for):
    """Killed once the rotation reached the meter, or once its answer is in: it ends done
    (the new key everywhere) or expired (a crash mid-op: the old key everywhere, and the
    next rotation goes through); never a meter and a head-end that disagree."""
    r = site["util"].post("/v1/devices/meter-a/rotate-key", params={"expires_in": 20})
    assert r.status_code == 202, r.text
    wid = r.json()["id"]
    processes.wait_until(
        lambda: site["api"].get("/v1/work/%s" % wid).json()["status"] in (wait_for, "done"),
        60, "the rotation to be %s" % wait_for)
    site["meter"].kill()                          # kill -9, mid-rotation
    site["meter"].start()
    w = _final(site, wid)
    if w["status"] == "done":
        processes.wait_until(lambda: _key_on_flash(site["meter"]) != site["key"], 60,
                             "the meter to commit its new key")
    else:
        assert w["status"] == "expired", w
        assert _key_on_flash(site["meter"]) == site["key"]
        _rotate(site)
    assert processes.run_work(site["api"], "meter-a", "read", timeout=60)["status"] == "done"
    assert _stolen_request(site["he"].url, "meter-a", site["key"]) == 401
    site["key"] = _key_on_flash(site["meter"])


def test_a_head_end_crash_mid_rotation_loses_no_key(site):
    he = site["he"]
    r = site["util"].post("/v1/devices/meter-a/rotate-key")
    assert r.status_code == 202, r.text
    wid = r.json()["id"]
    processes.wait_until(lambda: site["api"].get("/v1/work/%s" % wid).json()["status"] == "done",
                         60, "the meter's answer")
    he.kill()                                     # kill -9 with both keys held
    he.start()
    processes.wait_until(lambda: _key_on_flash(site["meter"]) != site["key"], 90,
                         "the meter to commit its new key")
    assert processes.run_work(site["api"], "meter-a", "read", timeout=60)["status"] == "done"
    assert _stolen_request(he.url, "meter-a", site["key"]) == 401
