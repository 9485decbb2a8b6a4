"""The README's firmware-update walkthrough, run as printed against `make sim` (issue 13,
item 7): its lines are read out of README.md and run literally by sh in a checkout of
links (sim_process.sandbox), so the state (.sim/, keys/, signed/) is the test's own.
`make sim` runs in the background; SIM_PORT, from the environment, only moves its port."""

import json
import os
import re
import subprocess

import pytest
from sim_process import Sim, sandbox

from lab import processes

pytestmark = pytest.mark.system

README = processes.ROOT / "README.md"


def walkthrough():
    """The shell lines of the first ```sh block under '## Firmware updates'."""
    text = README.read_text()
    section = text[text.index("## Firmware updates"):]
    section = section[:section.index("\n## ", 1)]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip()]


def _sh(script, cwd, env, timeout=300):
    return subprocess.run(["sh", "-e", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_walkthrough_updates_the_sim_meter(tmp_path):
    lines = walkthrough()
    assert [ln.split()[:2] for ln in lines if ln.startswith("make ")] == [["make", "sim"]]
    make_at = [k for k, ln in enumerate(lines) if ln.startswith("make sim")][0]
    box = sandbox(tmp_path / "checkout")
    port = processes.free_port()
    env = dict(os.environ, SIM_PORT=str(port), COLUMNS="200")
    env.pop("BACKCHANNEL_URL", None)
    before = _sh("\n".join(lines[:make_at]), box, env)
    assert before.returncode == 0, before.stderr
    sim = Sim(box / ".sim", port, argv=["sh", "-c", lines[make_at]], cwd=box, env=env)
    try:
        sim.wait_reading(timeout=180)
        cfg = json.loads((box / ".sim" / "meter.json").read_text())
        assert cfg["update_key"] == (box / "keys" / "release-key.pub").read_text().strip()
        after = _sh("\n".join(lines[make_at + 1:]), box, env)
        assert after.returncode == 0, after.stdout + after.stderr
        assert re.search(r"sim-meter-1\s.*installed", after.stdout), after.stdout
        assert re.search(r"version\W+0\.2\.0", after.stdout), after.stdout
        shipped = (box / "signed" / "0.2.0" / "version.py").read_text()
        assert 'VERSION = "0.2.0"' in shipped and not (box / "signed" / "0.2.0" /
                                                       "fwboot.py").exists()
        # offered again: the meter refuses it and stays installed
        again = _sh(". .sim/env\ntools/backchannel update sim --version 0.2.0", box, env)
        assert again.returncode == 1 and "rejected" in again.stdout + again.stderr, again
        (row,) = sim.api().get("/v1/updates", params={"device": "sim-meter-1"}).json()
        assert (row["version"], row["state"]) == ("0.2.0", "installed")
    finally:
        sim.stop()
    # make sim again, without UPDATE_KEY: the key is kept, and so is the installed release
    sim = Sim(box / ".sim", port, argv=["make", "sim"], cwd=box, env=env)
    try:
        sim.wait_reading(timeout=180)
        cfg = json.loads((box / ".sim" / "meter.json").read_text())
        assert cfg["update_key"] == (box / "keys" / "release-key.pub").read_text().strip()
        read = _sh(". .sim/env\ntools/backchannel send sim-meter-1 read --wait", box, env)
        assert read.returncode == 0 and re.search(r"version\W+0\.2\.0", read.stdout), read
    finally:
        sim.stop()
