"""`release sign` writes the release's version into the release (version.py), refuses a tree
that would report another version, never ships fwboot.py; and an `installed` outcome is not
overwritten when the meter refuses a re-offer of the version it runs (issue 13, item 7)."""

import hashlib
import json
import shutil

import pytest
from headend_harness import Api, headend, http, server  # noqa: F401
from headend_ota_fixtures import bc, publish, release, served  # noqa: F401

from headend import release_keys, releases
from headend.release_keys import ReleaseError
from lab import runner

pytestmark = pytest.mark.unit


@pytest.fixture
def key(tmp_path):
    priv, pub = release_keys.keygen(str(tmp_path / "keys"))
    return priv, pub


def _tree(tmp_path, version_py):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("print('hi')\n")
    if version_py is not None:
        (src / "version.py").write_text(version_py)
    return src


def test_the_firmware_tree_is_signed_with_its_version_and_without_fwboot(tmp_path, key):
    dest, text = releases.sign(key[0], "0.2.0", str(tmp_path / "out"),
                               src_dir=str(runner.FIRMWARE))
    manifest = json.loads(text)
    paths = [f["path"] for f in manifest["files"]]
    assert "fwboot.py" not in paths and not (tmp_path / "out" / "0.2.0" / "fwboot.py").exists()
    assert "version.py" in paths and "main.py" in paths
    source = (runner.FIRMWARE / "version.py").read_text()
    shipped = (tmp_path / "out" / "0.2.0" / "version.py").read_text()
    assert 'VERSION = "0.1.0"' in source                     # the checkout is untouched
    assert shipped == source.replace('VERSION = "0.1.0"', 'VERSION = "0.2.0"')
    entry = [f for f in manifest["files"] if f["path"] == "version.py"][0]
    assert entry["sha256"] == hashlib.sha256(shipped.encode()).hexdigest()
    # what a meter running the release imports says 0.2.0
    out = runner.run("micropython", _script(tmp_path, "import version\nprint(version.VERSION)"),
                     extra=[dest])
    assert out.strip() == "0.2.0"


def _script(tmp_path, code):
    path = tmp_path / "probe.py"
    path.write_text(code + "\n")
    return path


@pytest.mark.parametrize("version_py, message", [
    (None, "has no version.py"),
    ('VERSION = "0.3.0"\n', "says 0.3.0, newer than --version 0.2.0"),
    ('VERSION = "0.1.0"\nVERSION = "0.1.1"\n', 'expected one line VERSION = "X.Y.Z"'),
    ("VERSION = '0.1.0'\n", 'expected one line VERSION = "X.Y.Z"'),
    ('VERSION = "0.1"\n', 'expected one line VERSION = "X.Y.Z"'),
    ('import os\nVERSION = os.getenv("V")\n', 'expected one line VERSION = "X.Y.Z"'),
])
def test_a_tree_that_would_report_another_version_is_refused(tmp_path, key, version_py,
                                                             message):
    src = _tree(tmp_path, version_py)
    with pytest.raises(ReleaseError) as refused:
        releases.sign(key[0], "0.2.0", str(tmp_path / "out"), src_dir=str(src))
    assert message in str(refused.value)
    assert not (tmp_path / "out" / "0.2.0").exists()


def test_a_compiled_version_module_is_refused(tmp_path, key):
    src = _tree(tmp_path, 'VERSION = "0.2.0"\n')
    (src / "version.mpy").write_bytes(b"M\x06junk")
    with pytest.raises(ReleaseError, match="version.mpy cannot be given the release version"):
        releases.sign(key[0], "0.2.0", str(tmp_path / "out"), src_dir=str(src))


def test_a_tree_already_saying_the_version_is_shipped_as_is(tmp_path, key):
    text = '# mine\nVERSION = "0.2.0"  # the release\n\ndef parse(t):\n    return t\n'
    src = _tree(tmp_path, text)
    releases.sign(key[0], "0.2.0", str(tmp_path / "out"), src_dir=str(src))
    assert (tmp_path / "out" / "0.2.0" / "version.py").read_text() == \
        text.replace("  # the release", "")


def test_fwboot_in_a_hand_made_release_is_refused_at_publish(tmp_path, key):
    """An attacker (or an old signer) ships fwboot.py: signed, but publish refuses it."""
    src = _tree(tmp_path, 'VERSION = "0.2.0"\n')
    rel = tmp_path / "hand" / "0.2.0"
    shutil.copytree(src, rel)
    (rel / "fwboot.py").write_text("print('owned')\n")
    files = sorted(p.name for p in rel.iterdir())
    manifest = releases.canonical({"files": [
        {"len": (rel / n).stat().st_size, "path": n,
         "sha256": hashlib.sha256((rel / n).read_bytes()).hexdigest()} for n in files],
        "version": "0.2.0"})
    (rel / "manifest.json").write_text(manifest)
    sig = release_keys.sign(release_keys.load_private(key[0]), manifest.encode())
    (rel / "manifest.sig").write_text(sig + "\n")
    with pytest.raises(ReleaseError, match="fwboot.py is never part of a release"):
        releases.publish(str(rel), release_keys.load_public(str(tmp_path / "keys" /
                                                                "release-key.pub")),
                         str(tmp_path / "served"))


def test_installed_is_not_overwritten_by_a_refused_re_offer(served, headend, http):
    meter = headend.meter(http, "m1")
    op = Api(http, headend.op_token)
    for state in ("downloading", "verified", "installing", "installed"):
        meter.add("update", {"version": "1.2.0", "state": state})
    meter.exchange()
    # the same version offered again: the meter refuses it
    meter.add("update", {"version": "1.2.0", "state": "rejected",
                         "reason": "version downgrade: running 1.2.0, offered 1.2.0"})
    meter.exchange()
    (u,) = op.get("/v1/updates", params={"device": "m1"}).json()
    assert (u["version"], u["state"], u["reason"]) == ("1.2.0", "installed", None)
    fw = op.get("/v1/devices/m1").json()["firmware"]
    assert (fw["version"], fw["state"], fw["installed"]) == ("1.2.0", "installed", "1.2.0")
    # a refusal of a version it never installed is still recorded
    meter.add("update", {"version": "1.3.0", "state": "rejected", "reason": "bad signature"})
    meter.exchange()
    rows = op.get("/v1/updates", params={"device": "m1"}).json()
    assert [(u["version"], u["state"]) for u in rows] == [("1.2.0", "installed"),
                                                          ("1.3.0", "rejected")]
