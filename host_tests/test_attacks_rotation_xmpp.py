"""Key rotation over XMPP and email (issue 12: every defence for each transport alike), with
nothing faked: the real head-end with its XMPP component and mail gateway, Prosody and a
private dovecot + postfix configured as an operator does, MicroPython meters on
transport=xmpp and transport=email. Their logins are credentials of their own (SCRAM keys,
a mailbox password), so only the exchange's key rotates: the meter signs with the new key
once the head-end holds it, the old key stops working after, and a kill -9 of the meter
mid-rotation loses neither key."""

import hashlib
import hmac
import json
import os
import shutil
import time

import httpx
import pytest

from lab import mailsite, pki, processes
from lab.im_process import ImServer

pytestmark = pytest.mark.system

XM, EM = "meter-xr", "meter-er"


def _key_on_flash(meter):
    data = meter.config.read_bytes()
    if data[:3] == b"BC1":
        data = data[7:-4]
    return json.loads(data)["device_key"]


def _stolen_request(url, device, key):
    body = json.dumps({"v": 2, "device": device, "ts": int(time.time()), "epoch": "e" * 16,
                       "nonce": os.urandom(8).hex(), "wait": 0, "room": 0}).encode()
    sig = hmac.new(bytes.fromhex(key), body, hashlib.sha256).hexdigest()
    return httpx.post(url + "/v1/exchange", content=body, timeout=30, headers={
        "X-BC-Signature": sig, "Content-Type": "application/json"}).status_code


def _rotates(he, util, api, meter, device, kill=False, timeout=120):
    old = _key_on_flash(meter)
    assert _stolen_request(he.url, device, old) == 200
    r = util.post("/v1/devices/%s/rotate-key" % device, params={"expires_in": 30})
    assert r.status_code == 202, r.text
    wid = r.json()["id"]
    if kill:        # kill -9 once the rotation reached the meter
        processes.wait_until(lambda: api.get("/v1/work/%s" % wid).json()["status"]
                             in ("delivered", "done"), timeout, "the rotation to arrive")
        meter.kill()
        meter.start()
        w = processes.wait_until(lambda: (lambda w: w if w["status"] not in (
            "queued", "delivered") else None)(api.get("/v1/work/%s" % wid).json()), timeout,
            "the rotation to end")
        if w["status"] != "done":       # cut mid-op: the old key everywhere, and it works
            assert w["status"] == "expired", w
            assert _key_on_flash(meter) == old and _stolen_request(he.url, device, old) == 200
            return _rotates(he, util, api, meter, device, timeout=timeout)
    processes.wait_until(lambda: _key_on_flash(meter) != old, timeout,
                         "%s to commit its new key" % device)
    assert processes.run_work(api, device, "read", timeout=timeout)["status"] == "done"
    assert _stolen_request(he.url, device, old) == 401
    assert _stolen_request(he.url, device, _key_on_flash(meter)) == 200


@pytest.mark.skipif(shutil.which("prosody") is None, reason="prosody is not installed")
def test_an_xmpp_meter_rotates_and_the_old_key_stops(tmp_path):
    im = ImServer(tmp_path)
    im.configure()
    he = processes.Headend(tmp_path, config=im.headend_config())
    key = he.add_device(XM)
    op, util = he.add_token("op", "operator"), he.add_token("uma", "utility")
    meter = None
    try:
        im.start()
        im.add_meter(XM)
        he.start(timeout=120)
        meter = processes.Meter(tmp_path, XM, key, "", **im.meter_settings(XM)).start()
        api = he.api(op)
        processes.wait_until(lambda: api.get("/v1/devices/%s/readings" % XM).json(), 60,
                             "the first reading over XMPP")
        _rotates(he, he.api(util), api, meter, XM)
        _rotates(he, he.api(util), api, meter, XM, kill=True)
    finally:
        if meter is not None:
            meter.kill()
        he.kill()
        im.stop()


@pytest.mark.skipif(mailsite.missing() is not None, reason="no private mail server here")
def test_an_email_meter_rotates_and_the_old_key_stops(tmp_path):
    pytest.importorskip("aioimaplib", reason="aioimaplib is not installed: run make venv")
    pki.init(tmp_path / "pki", hosts=[mailsite.DOMAIN], ips=["127.0.0.1"])
    mail = mailsite.MailSite(tmp_path / "pki").configure([EM])
    he = processes.Headend(tmp_path, extra=mail.serve_args(mail_probe_s=20))
    key = he.add_device(EM)
    op, util = he.add_token("op", "operator"), he.add_token("uma", "utility")
    meter = processes.Meter(tmp_path, EM, key, "", **mail.meter_settings(EM, "imap",
                                                                        mail_send_s=5))
    try:
        mail.start()
        he.start(timeout=120)
        meter.start()
        api = he.api(op)
        processes.wait_until(lambda: api.get("/v1/devices/%s/readings" % EM).json(), 90,
                             "the first reading by mail")
        _rotates(he, he.api(util), api, meter, EM, timeout=180)
    finally:
        meter.kill()
        he.kill()
        mail.remove()
