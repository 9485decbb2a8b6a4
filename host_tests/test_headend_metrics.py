"""GET /metrics: Prometheus text that promtool accepts, with a token unless the head-end
listens on loopback only; counts that follow what happened; no per-device labels."""

import json
import re
import shutil
import subprocess

import pytest
from headend_harness import ROOT, client, headend, op  # noqa: F401
from prometheus_client.parser import text_string_to_metric_families

from headend import cli as cli_mod
from headend import metrics

pytestmark = pytest.mark.unit


def scrape(op):
    r = op.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def samples(text):
    """{(name, frozenset(labels)): value}"""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())))


def test_metrics_need_a_token(client, headend):
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers={"Authorization": "Bearer forged-token-0123456789"})
    assert r.status_code == 401 and "backchannel_" not in r.text
    r = client.get("/metrics", headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert r.status_code == 401
    for token in (headend.op_token, headend.util_token):
        assert client.get("/metrics", headers=headend.auth(token)).status_code == 200


def test_loopback_only_needs_no_token(client, headend):
    headend.app.state.loopback_only = True
    r = client.get("/metrics")
    assert r.status_code == 200 and "backchannel_devices" in r.text


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("", False),
    ("metrics.example", False), ("::ffff:10.0.0.1", False)])
def test_loopback_only(host, loopback):
    assert metrics.loopback_only(host) is loopback


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_serve_decides_from_its_bind(tmp_path, monkeypatch, host, loopback):
    seen = {}
    monkeypatch.setattr("headend.server.run", lambda app, *a, **k: seen.update(app=app))
    with pytest.raises(SystemExit) as e:
        cli_mod.main(["serve", "--db", str(tmp_path / "h.db"), "--host", host,
                      "--insecure-http"])
    assert e.value.code == 0
    assert seen["app"].state.loopback_only is loopback


def test_counts_follow_the_fleet(client, headend, op):
    meters = [headend.meter(client, "meter-secret-%d" % i) for i in range(3)]
    headend.meter(client, "never-seen")
    for m in meters:
        m.presence("available")
        m.reading()
        m.exchange()
    meters[0].exchange()
    bad = meters[1].post(meters[1].envelope(), sig="00" * 32)
    assert bad.status_code == 401
    op.work("meter-secret-2", "read")
    op.work("meter-secret-2", "get_config")
    text = scrape(op)
    assert value(text, "backchannel_exchanges_total", transport="http", status="200") == 4
    assert value(text, "backchannel_exchanges_total", transport="http", status="401") == 1
    assert value(text, "backchannel_exchange_latency_seconds_count", transport="http") == 4
    assert value(text, "backchannel_devices", presence="available") == 3
    assert value(text, "backchannel_devices", presence="unavailable") == 1
    assert value(text, "backchannel_devices_by_transport", transport="http") == 3
    assert value(text, "backchannel_devices_by_transport", transport="none") == 1
    assert value(text, "backchannel_work_open", status="queued") == 2
    assert value(text, "backchannel_connections", transport="http") == 0
    batches = value(text, "backchannel_group_commit_batch_size_count")
    assert batches >= 1
    assert value(text, "backchannel_group_commit_batch_size_sum") == 4
    # no label names a meter: the series do not grow with the fleet
    assert "meter-secret" not in text and "never-seen" not in text


def test_promtool_accepts_the_metrics(client, headend, op):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    m = headend.meter(client, "meter-a")
    m.reading()
    m.exchange()
    text = scrape(op)
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", (
        p.stdout + p.stderr)


DASHBOARD = ROOT / "docs" / "grafana" / "backchannel-headend.json"


def dashboard_exprs():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_grafana_dashboard_asks_for_metrics_that_exist(client, headend, op):
    m = headend.meter(client, "meter-a")
    m.reading()
    m.exchange()
    names = {s[0] for s in samples(scrape(op))}
    exprs = dashboard_exprs()
    assert len(exprs) >= 8
    for expr in exprs:
        for name in re.findall(r"backchannel_[a-z_]+", expr):
            assert name in names, (name, expr)


def test_promtool_parses_the_dashboard_queries(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:q%d" % i, "expr": e} for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))           # JSON is YAML
    p = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
