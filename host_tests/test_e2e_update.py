"""End-to-end scenario 8 (docs/e2e.md, docs/ota.md): a signed firmware update rolled out by
`backchannel update` from outside reaches a meter behind its site firewall over its own
outbound channel (HTTP long-poll, MQTT or its XMPP session), downloads in chunks, reboots
into the release and confirms it. Shares the lab and head-end of test_e2e.py (the session
fixture `env`); the update goes to a third meter, meter-u in site a, so the other
scenarios' meters keep the factory firmware."""

import hashlib
import os
import shutil
import subprocess
import time

import pytest
from e2e_env import MQTT_KEEPALIVE, REPORT_S

from lab import processes, runner

pytestmark = pytest.mark.root

RELEASE = "0.2.0"
DEVICE = "meter-u"
# how long the rollout may take: over email each chunk is a round trip of two mails
# (about 100 of them for the whole firmware), seconds each on a loaded machine
TIMEOUT_S = {"email": 600}


def _cli(*argv, lab=None, env=None, timeout=60):
    """tools/backchannel with argv; inside the lab's `out` namespace when lab is given."""
    cmd = [*processes.HEADEND, *map(str, argv)]
    if lab is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    p = lab.run("out", cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _release(work):
    """The whole firmware, version.py saying RELEASE, signed with a fresh offline key and
    published into the head-end's releases directory. Returns (public key hex, sources)."""
    src = work / ("fw-src-%s" % RELEASE)
    shutil.copytree(runner.FIRMWARE, src, ignore=shutil.ignore_patterns("__pycache__"))
    version = (src / "version.py").read_text()
    assert 'VERSION = "0.1.0"' in version
    (src / "version.py").write_text(version.replace('VERSION = "0.1.0"',
                                                    'VERSION = "%s"' % RELEASE))
    keys, out = work / "release-keys", work / "releases-out"
    for argv in (("release", "keygen", "--out", keys),
                 ("release", "sign", "--key", keys / "release-key.pem", "--version", RELEASE,
                  src, "--out", out)):
        r = _cli(*argv)
        assert r.returncode == 0, r.stderr
    return (keys / "release-key.pub").read_text().strip(), src


def test_8_signed_update_reaches_a_meter_behind_its_firewall(env, record_property):
    """8. A signed firmware update reaches a meter behind its firewall and is installed."""
    pub, src = _release(env.dir)
    r = _cli("release", "publish", env.dir / "releases-out" / RELEASE, "--pub",
             env.dir / "release-keys" / "release-key.pub", "--db", env.headend.db)
    assert r.returncode == 0, r.stderr

    reg = env.admin.post("/v1/devices", json={"id": DEVICE})
    assert reg.status_code == 201, reg.text
    if env.transport == "mqtt":
        env.broker.reload()                      # meter-u's login and ACL
        link, url = env.broker.meter_settings(keepalive=MQTT_KEEPALIVE), ""
    elif env.server is not None:     # its own account on the lab's Prosody, or mailbox
        env.server.add_meter(DEVICE)
        link, url = env.server.meter_settings(DEVICE), ""
    else:
        link, url = {}, env.headend.url
    meter = env.meters[DEVICE] = processes.Meter(env.dir, DEVICE, reg.json()["key"], url,
                                              lab=env.lab, ns="a", report_s=REPORT_S,
                                              update_key=pub, **link)
    try:
        env.start(DEVICE)
        env.wait(lambda: env.presence(DEVICE)["state"] == "available", 30,
                 "%s to be available" % DEVICE)
        assert env.run(DEVICE, "read")["result"]["version"] == "0.1.0"
        r = env.api.post("/v1/groups", json={"name": "update-%s" % env.transport,
                                             "members": [DEVICE]})
        assert r.status_code in (200, 201), r.text

        t0 = time.monotonic()
        cli_env = dict(os.environ, BACKCHANNEL_URL=env.headend.url,
                       BACKCHANNEL_TOKEN=env.headend_token, COLUMNS="200")
        limit = TIMEOUT_S.get(env.transport, 240)
        r = _cli("update", "update-%s" % env.transport, "--version", RELEASE, "--timeout",
                 limit, "--interval", "0.5", lab=env.lab, env=cli_env, timeout=limit + 60)
        took = time.monotonic() - t0
        assert r.returncode == 0, (r.stdout, r.stderr, env.logs())
        assert any(DEVICE in line and "installed" in line for line in r.stdout.splitlines()), \
            r.stdout

        # the meter runs the release: its read says so, and every file on its flash is
        # byte for byte the signed source
        assert env.run(DEVICE, "read")["result"]["version"] == RELEASE
        staged = meter.dir / "fw" / RELEASE
        for path in src.rglob("*.py"):
            rel = path.relative_to(src)
            if rel.as_posix() == "fwboot.py":          # never part of a release
                assert not (staged / rel).exists()
                continue
            got = (staged / rel).read_bytes()
            assert hashlib.sha256(got).digest() == hashlib.sha256(path.read_bytes()).digest(), rel
        states = [u["state"] for u in env.get("/v1/updates?device=%s" % DEVICE)]
        assert "installed" in states, states
        assert env.device(DEVICE)["firmware"]["installed"] == RELEASE
        assert env.lab.listening_sockets(meter.proc.pid) == []     # still listens on nothing
        files = sum(1 for _ in src.rglob("*.py"))
        record_property("evidence", "%s: %d files (%d KB) signed offline, fetched through the "
                        "firewall over %s, installed and confirmed in %.1f s"
                        % (RELEASE, files, sum(p.stat().st_size for p in src.rglob("*.py"))
                           // 1024, env.transport, took))
    finally:
        meter.kill()
