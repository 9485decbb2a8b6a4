"""Import only what the configuration uses (a board's heap: docs/performance.md): no
transport modules without a transport, no MQTT modules for HTTP, no HTTP client for MQTT
without TLS... and the updater with its manifest, P-256 and file modules only when an update
is in flight at start or an `update` op asks for it."""

import json

import pytest

from lab import pki, runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "config_imports.py"
KEY = "00112233445566778899aabbccddeeff"
MQTT = {"comms", "mqtt_comms", "mqtt_session", "mqtt_wire", "ha_discovery", "umqtt.simple",
        "netconn"}
HTTP = {"comms", "httpc", "netconn"}
XMPP = {"xmpp_comms", "xmpp_session", "xmpp_stanza", "xmlmini"}
SCRAM = "10000:c2FsdA==:%s:%s" % ("11" * 20, "22" * 20)
UPDATER = {"updater", "fw_manifest", "fw_files", "fw_image", "p256"}
MAIL = {"mail_comms", "mail_mime", "mail_line", "smtp_client", "imap_idle", "pop3_client"}


def _modules(interpreter, tmp_path, settings, *extra):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(dict(settings, device_id="m", device_key=KEY)))
    out = runner.run(interpreter, DRIVER, state, "@%s" % cfg, *extra)
    return runner.records(out)[0]


def test_no_transport_imports_no_link(interpreter, tmp_path):
    mods = set(_modules(interpreter, tmp_path, {})["modules"])
    assert "metering" in mods and "ops" in mods
    assert not mods & (MQTT | HTTP | XMPP | UPDATER), sorted(mods & (MQTT | HTTP | UPDATER))


def test_http_imports_no_mqtt_and_no_updater(interpreter, tmp_path):
    mods = set(_modules(interpreter, tmp_path, {"server_url": "http://127.0.0.1:9"})["modules"])
    assert HTTP <= mods
    assert not mods & ((MQTT - HTTP) | XMPP | UPDATER | MAIL), sorted(
        mods & (MQTT | XMPP | UPDATER | MAIL))


def test_mqtt_imports_no_updater(interpreter, tmp_path):
    r = _modules(interpreter, tmp_path, {"transport": "mqtt", "mqtt_host": "127.0.0.1",
                                             "mqtt_tls": False})
    mods = set(r["modules"])
    assert MQTT <= mods
    assert not mods & (UPDATER | MAIL | XMPP), sorted(mods & (UPDATER | MAIL | XMPP))


def test_email_imports_no_mqtt_and_its_clients_only_when_used(interpreter, tmp_path):
    import shutil
    import tempfile

    from lab import pki

    pki.init(tmp_path / "pki", hosts=["t"])
    # a short path: the unix port dies ("FATAL: uncaught NLR") on an argument over 255 bytes
    short = tempfile.mkdtemp()
    try:
        ca = shutil.copy(pki.paths(tmp_path / "pki")["ca_der"], short)
        r = _modules(interpreter, tmp_path, {
            "transport": "email", "mail_host": "h", "mail_user": "m@t", "mail_password": "p",
            "mail_to": "h@t", "ca_file": ca})
    finally:
        shutil.rmtree(short)
    mods = set(r["modules"])
    assert {"mail_comms", "mail_mime", "mail_line", "smtp_client", "imap_idle"} <= mods
    # the POP3 client only for mail_pickup pop3; no MQTT, no updater
    assert not mods & ((MQTT - HTTP) | UPDATER | {"pop3_client"})


def test_xmpp_imports_no_mqtt_and_no_updater(interpreter, tmp_path):
    pki.init(tmp_path / "pki", hosts=["im.test"])
    r = _modules(interpreter, tmp_path, {
        "transport": "xmpp", "xmpp_host": "127.0.0.1", "xmpp_domain": "im.test",
        "xmpp_component": "fleet.im.test", "xmpp_scram": SCRAM,
        "ca_file": str(pki.paths(tmp_path / "pki")["ca_pem"])})
    mods = set(r["modules"])
    assert XMPP <= mods, sorted(XMPP - mods)
    assert not mods & ((MQTT - HTTP - {"netconn"}) | UPDATER), sorted(mods & (MQTT | UPDATER))


def test_updater_comes_with_an_update_op(interpreter, tmp_path):
    r = _modules(interpreter, tmp_path, {"server_url": "http://127.0.0.1:9"}, "update")
    assert not set(r["modules"]) & UPDATER
    assert r["updater_ok"] is True
    assert UPDATER <= set(r["after_update"])


def test_updater_at_start_when_an_update_is_in_flight(interpreter, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "update.json").write_bytes(b"")  # a job record (even damaged)
    mods = set(_modules(interpreter, tmp_path, {"server_url": "http://127.0.0.1:9"})["modules"])
    assert UPDATER <= mods, sorted(UPDATER - mods)


ENCODING_MODULES = {"json": {"enc_json"}, "xml": {"enc_xml", "xmlmini", "xmlvalue", "xmltext"},
                    "soap": {"enc_soap", "enc_xml", "xmlmini", "xmlvalue", "xmltext"},
                    "wbxml": {"enc_wbxml", "wbxml_tokens", "xmlvalue", "xmltext"}}


@pytest.mark.parametrize("encoding", sorted(ENCODING_MODULES))
def test_a_meter_imports_only_its_own_encoding(interpreter, tmp_path, encoding):
    mods = set(_modules(interpreter, tmp_path, {"server_url": "http://127.0.0.1:9",
                                                 "encoding": encoding})["modules"])
    every = set().union(*ENCODING_MODULES.values())
    assert mods & every == ENCODING_MODULES[encoding], sorted(mods & every)
