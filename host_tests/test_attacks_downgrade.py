"""An https -> http change of the head-end URL, tried by every way there is to change a
meter's config (issue 12, "An https->http change is refused in every class"): over the back
channel with a utility token (utility work may change billing keys, not this), at the serial
console of a running meter, and at the console of an idle one under MicroPython. Refused with
the reason, the config unchanged; a deliberate move at the console clears the URL first."""

import json
from pathlib import Path

import config
import pytest

from lab import runner

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent
HTTPS = "https://headend.example:8443"
IMPORTS = HERE / "mp_scripts" / "config_imports.py"


def base():
    return config.validate({"server_url": HTTPS, "device_id": "meter-a"})


@pytest.mark.parametrize("url", ["http://headend.example:8443", "http://attacker.example",
                                 "http://[::1]:80"])
def test_https_to_http_is_refused_by_the_config_itself(url):
    cfg = base()
    with pytest.raises(config.ConfigError, match="https to http"):
        config.validate({"server_url": url}, cfg)
    assert cfg["server_url"] == HTTPS


def test_a_deliberate_move_at_the_console_clears_the_url_first():
    cleared = config.validate({"server_url": ""}, base())
    assert config.validate({"server_url": "http://lab.example"}, cleared)["server_url"] \
        == "http://lab.example"
    assert config.validate({"server_url": "https://new.example"}, base())["server_url"] \
        == "https://new.example"


def test_no_role_over_the_back_channel_gets_it_through(tmp_path):
    import envelope
    import fuzz_parsers as fz
    import ops
    from inbox import Inbox
    outbox = fz.FakeOutbox()
    app = fz.FakeApp(outbox)
    app.cfg = base()
    d = ops.Dispatcher(app, fz.KEY, outbox, Inbox(str(tmp_path / "inbox")))
    for n, role in enumerate(("operator", "utility"), 1):
        args = json.dumps({"changes": {"server_url": "http://attacker.example"}})
        item = {"id": "w-%d" % n, "device": fz.DEVICE, "seq": n, "op": "set_config",
                "role": role, "expires": 2 * 10 ** 9, "from": "operator:x", "args": args}
        item["sig"] = envelope.sign(fz.KEY, envelope.work_message(item))
        assert d.handle(item) == "rejected"
    assert app.cfg["server_url"] == HTTPS


def test_the_console_of_a_running_meter_refuses_it(tmp_path, monkeypatch, capsys):
    import bc
    from app import App

    from boards.sim_board import DEFAULT_SCENARIO, SimBoard
    app = App(SimBoard(DEFAULT_SCENARIO), config.validate({"device_id": "meter-a"}),
              str(tmp_path), realtime=False)
    app.cfg = base()            # as provisioned (its https link needs a CA file, not tested here)
    monkeypatch.setattr(bc, "_app", app)
    monkeypatch.setattr(bc, "_attached", True)
    assert bc.set("server_url", "http://attacker.example") is False
    assert "https to http" in capsys.readouterr().out
    assert app.cfg["server_url"] == HTTPS


def test_micropython_refuses_it_too(tmp_path):
    out = runner.records(runner.run("micropython", HERE / "mp_scripts" / "config_downgrade.py",
                                    cwd=str(tmp_path)))
    assert [o if o == "ok" else "refused" for o in out] == ["refused", "refused", "ok", "ok"]
    assert "https to http" in out[0]



def test_a_meter_reaches_mqtt_over_tls_unless_told_otherwise(interpreter, tmp_path):
    """Issue 12, 8: meters reach MQTT over TLS by default (8883, the broker's CA pinned). A
    meter given a broker host and no CA does not fall back to plain MQTT (its broker password
    in clear): it refuses to start, saying why. Plain MQTT (the broker's loopback listener)
    is an explicit console choice, `mqtt_tls` false."""
    assert config.validate({"transport": "mqtt", "mqtt_host": "broker.example"})["mqtt_tls"]
    state = tmp_path / "state"
    state.mkdir()
    cfg = {"device_id": "m", "device_key": "00" * 16, "transport": "mqtt",
           "mqtt_host": "broker.example"}
    with pytest.raises(runner.RunnerError, match="mqtt_tls needs the broker's CA"):
        runner.run(interpreter, IMPORTS, state, json.dumps(cfg))
    runner.run(interpreter, IMPORTS, state, json.dumps(dict(cfg, mqtt_tls=False)))
