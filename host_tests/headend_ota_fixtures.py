"""Shared by the head-end firmware-update tests (test_headend_ota*.py): the CLI in-process,
a signed release of a small source tree, publishing it, `fetch` on a real exchange, and
`backchannel update` as a subprocess."""

import os
import subprocess
import sys

import pytest
from headend_fake_meter import hmac_hex

from headend.cli import main
from lab.processes import wait_until

CLI = [sys.executable, "-m", "headend"]


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture
def bc(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    return lambda *argv: run(capsys, *argv)


def source_tree(root):
    """A small firmware tree: modules, a sub-package, a binary file, a __pycache__."""
    files = {"app.py": b"print('v2')\n" * 700, "lib/util.py": b"X = 1\n",
             "version.py": b'VERSION = "1.2.0"\n',
             "lib/data.bin": os.urandom(20000), "z_last.mpy": b"M\x06" + os.urandom(9000)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"junk")
    return files


@pytest.fixture
def release(tmp_path, bc):
    """keygen + sign 1.2.0 of a source tree into tmp/out; (keys dir, src files, out dir)."""
    src = tmp_path / "src"
    files = source_tree(src)
    rc, out, err = bc("release", "keygen", "--out", tmp_path / "keys")
    assert rc == 0, err
    rc, out, err = bc("release", "sign", "--key", tmp_path / "keys" / "release-key.pem",
                      "--version", "1.2.0", src, "--out", tmp_path / "out")
    assert rc == 0 and "signed 1.2.0: 5 file(s)" in out, err
    return tmp_path / "keys", files, tmp_path / "out"


def publish(bc, keys, release_dir, releases_dir):
    return bc("release", "publish", release_dir, "--pub", keys / "release-key.pub",
              "--releases", releases_dir)



@pytest.fixture
def served(tmp_path, bc, release, headend):
    """1.2.0 published where the head-end serves it by default (`releases` by its db)."""
    keys, files, out = release
    assert publish(bc, keys, out / "1.2.0", tmp_path / "releases")[0] == 0
    return files


def fetch(meter, **want):
    body = meter.envelope()
    body["fetch"] = want
    r = meter.post(body)
    assert r.status_code == 200, r.text
    assert r.headers["x-bc-signature"] == hmac_hex(meter.key, r.content)   # chunk is signed
    return r.json()["chunk"]



def start_update(url, token, *argv):
    env = dict(os.environ, BACKCHANNEL_URL=url, BACKCHANNEL_TOKEN=token, COLUMNS="200")
    return subprocess.Popen(CLI + ["update", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def until_update_work(meter):
    wait_until(lambda: meter.step() and meter.update_work, 30,
               "the update work for %s" % meter.device)


