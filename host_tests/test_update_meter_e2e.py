"""A whole meter (tools/sim/meter_main.py, the firmware app over HTTP) takes a signed update from
a minimal head-end (fake_exchange.py): the op, fetch/chunk on its exchanges, the reboot into
the new modules (purged and re-imported in the same process), confirmation; then a release
that cannot start is rolled back at the next power-on. Both interpreters."""

import json
import subprocess

import pytest
from fake_exchange import FakeExchange
from update_meter_harness import KEY, manifest_text, pub_hex, release_files, sign

from lab import runner
from lab.processes import wait_until
from sim import METER_MAIN

pytestmark = pytest.mark.system

DEVICE_KEY = "00112233445566778899aabbccddeeff"


@pytest.fixture
def site(interpreter, tmp_path):
    releases = tmp_path / "releases"
    for version, files in (("0.2.0", release_files("0.2.0")),
                           ("0.3.0", dict(release_files("0.3.0"),
                                          **{"app.py": b"raise RuntimeError('broken')\n"}))):
        for path, data in files.items():
            (releases / version / path).parent.mkdir(parents=True, exist_ok=True)
            (releases / version / path).write_bytes(data)
        text = manifest_text(version, files)
        (releases / version / "manifest.json").write_text(text)
        (releases / version / "manifest.sig").write_text(sign(text))
    head = FakeExchange(DEVICE_KEY, releases)
    meter_dir = tmp_path / "meter"
    meter_dir.mkdir()
    (meter_dir / "config.json").write_text(json.dumps({
        "device_id": "m1", "device_key": DEVICE_KEY, "server_url": head.url, "report_s": 1,
        "update_key": pub_hex(KEY)}))
    procs = []

    def start():
        cmd, env = runner.command(interpreter, METER_MAIN,
                              str(meter_dir / "config.json"), str(meter_dir / "state"))
        out = open(meter_dir / "stdout.log", "ab")
        err = open(meter_dir / "stderr.log", "ab")
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err))
        return procs[-1]

    yield {"head": head, "releases": releases, "dir": meter_dir, "start": start}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=20)
    head.close()


def offer(site, version):
    rel = site["releases"] / version
    return site["head"].work("update", {"manifest": (rel / "manifest.json").read_text(),
                                        "sig": (rel / "manifest.sig").read_text()})


def result(site, wid, what):
    return wait_until(lambda: site["head"].results.get(wid), 60, what)


def update_states(site, version):
    return [b["state"] for b in site["head"].of_kind("update") if b["version"] == version]


def started(site):
    text = (site["dir"] / "stdout.log").read_text()
    return [json.loads(line) for line in text.splitlines() if '"started"' in line]


def test_update_end_to_end(site):
    head = site["head"]
    meter = site["start"]()
    assert result(site, head.work("read", {}), "a read")["body"]["version"] == "0.1.0"

    res = result(site, offer(site, "0.2.0"), "the update op")
    assert res["status"] == "done" and res["body"] == {"version": "0.2.0",
                                                       "state": "downloading"}
    wait_until(lambda: "installed" in update_states(site, "0.2.0"), 120, "0.2.0 installed")
    states = update_states(site, "0.2.0")
    assert states[0] == "downloading" and states[-3:] == ["verified", "installing",
                                                          "installed"]
    assert len(started(site)) == 2  # one reboot, inside the same process
    assert head.fetches >= 6
    body = result(site, head.work("read", {}), "a read on 0.2.0")["body"]
    assert body["version"] == "0.2.0"  # the new version.py was imported
    pointer = json.loads((site["dir"] / "fw" / "current.json").read_text())
    assert pointer["version"] == "0.2.0" and pointer["probation"] is False

    # 0.3.0 cannot even import its app: the process dies after the switch; power it on again
    result(site, offer(site, "0.3.0"), "the second update op")
    meter.wait(timeout=120)
    logs = [(site["dir"] / n).read_text() for n in ("stdout.log", "stderr.log")]
    assert meter.returncode != 0 and "RuntimeError: broken" in "".join(logs)
    assert update_states(site, "0.3.0")[-1] == "installing"
    site["start"]()
    wait_until(lambda: "rolled_back" in update_states(site, "0.3.0"), 60, "the rollback")
    rolled = [b for b in head.of_kind("update") if b["state"] == "rolled_back"]
    assert rolled == [{"version": "0.3.0", "state": "rolled_back",
                       "reason": "no healthy exchange within probation"}]
    assert result(site, head.work("read", {}), "a read")["body"]["version"] == "0.2.0"
