"""The command `make sim` prints works when pasted into a new shell: no activated venv, a
bare PATH, the real head-end over TLS with its own CA, and a real meter doing the work.
Also `backchannel` through the symlink `make install` makes, and `tools/replay`."""

import os
import shutil
import subprocess

import pytest

from lab import pki, processes
from sim.__main__ import try_command

pytestmark = pytest.mark.system

NEW_SHELL_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("simcmd")
    pki.init(str(work / "pki"), ips=["127.0.0.1"])
    certs = {k: str(v) for k, v in pki.paths(str(work / "pki")).items()}
    he = processes.Headend(work, certfile=certs["server_pem"], keyfile=certs["server_key"],
                           cafile=certs["ca_pem"])
    key = he.add_device("sim-meter-1")
    token = he.add_token("sim-operator", "operator")
    he.start()
    meter = processes.Meter(work, "sim-meter-1", key, he.url, ca_file=certs["ca_der"]).start()
    yield {"url": he.url, "token": token, "ca": certs["ca_pem"], "work": work}
    meter.kill()
    he.kill()


def test_printed_command_works_in_a_new_shell(site):
    cmd = try_command(site["url"], site["token"], site["ca"])
    assert cmd.startswith("BACKCHANNEL_URL=https://")
    p = subprocess.run(["/bin/sh", "-c", cmd], cwd=processes.ROOT, env=NEW_SHELL_ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "done" in p.stdout and "Traceback" not in p.stderr


def test_backchannel_through_a_symlink_on_path(site, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(processes.ROOT / "tools" / "backchannel", bin_dir / "backchannel")
    env = dict(NEW_SHELL_ENV, PATH="%s:/usr/bin:/bin" % bin_dir, BACKCHANNEL_URL=site["url"],
               COLUMNS="200",
               BACKCHANNEL_TOKEN=site["token"], BACKCHANNEL_CACERT=site["ca"])
    p = subprocess.run(["backchannel", "devices"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "sim-meter-1" in p.stdout


def test_replay_from_a_new_shell(tmp_path):
    csv = tmp_path / "w.csv"
    rate, n = 3200, 3200 * 2
    import math
    lines = ["t,v,i"] + ["%.6f,%.3f,%.3f" % (k / rate, 325 * math.sin(2 * math.pi * 50 * k / rate),
                                               7 * math.sin(2 * math.pi * 50 * k / rate))
                         for k in range(n)]
    csv.write_text("\n".join(lines) + "\n")
    p = subprocess.run([str(processes.ROOT / "tools" / "replay"), str(csv)], cwd=tmp_path,
                       env=NEW_SHELL_ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert '"type": "reading"' in p.stdout


def test_launcher_without_venv_says_what_to_do(tmp_path):
    fake_root = tmp_path / "repo"
    (fake_root / "tools").mkdir(parents=True)
    shutil.copy(processes.ROOT / "tools" / "backchannel", fake_root / "tools" / "backchannel")
    p = subprocess.run([str(fake_root / "tools" / "backchannel"), "devices"],
                       env=NEW_SHELL_ENV, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "make venv" in p.stderr and "Traceback" not in p.stderr
