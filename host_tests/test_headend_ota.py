"""Signed firmware releases on the head-end side (docs/ota.md): `release keygen|sign|publish`
checked against the `cryptography` package and, once the meter side is on the branch,
against the meter's own manifest check."""

import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from headend_ota_fixtures import bc, publish, release  # noqa: F401
from headend_ota_meter import verify_sig

from lab import runner

pytestmark = pytest.mark.unit

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# --- keys, signing, publishing ---

def test_keygen_sign_publish_round_trip(tmp_path, bc, release):
    keys, files, out = release
    pem = keys / "release-key.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(private.curve, ec.SECP256R1)
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")      # PKCS#8
    pub_hex = (keys / "release-key.pub").read_text().strip()
    assert len(pub_hex) == 130 and pub_hex == private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()

    rel = out / "1.2.0"
    text = (rel / "manifest.json").read_text()
    expected = {"files": [{"len": len(files[p]), "path": p,
                           "sha256": hashlib.sha256(files[p]).hexdigest()}
                          for p in sorted(files)], "version": "1.2.0"}
    assert text == json.dumps(expected, sort_keys=True, separators=(",", ":"))
    sig = (rel / "manifest.sig").read_text().strip()
    assert len(sig) == 128 and verify_sig(pub_hex, text.encode(), sig)
    assert int(sig[64:], 16) <= P256_ORDER // 2                       # low s
    assert not verify_sig(pub_hex, text.replace("1.2.0", "1.2.1").encode(), sig)
    for p, data in files.items():
        assert (rel / p).read_bytes() == data
    assert not (rel / "__pycache__").exists()

    rc, msg, err = publish(bc, keys, rel, tmp_path / "served")
    assert rc == 0 and "published 1.2.0" in msg, err
    served = tmp_path / "served" / "1.2.0"
    assert sorted(str(p.relative_to(served)) for p in served.rglob("*") if p.is_file()) == \
        sorted(list(files) + ["manifest.json", "manifest.sig"])
    assert (served / "manifest.json").read_text() == text
    assert all((served / p).read_bytes() == d for p, d in files.items())
    rc, msg, _ = publish(bc, keys, rel, tmp_path / "served")
    assert rc == 0 and "already published" in msg


def test_image_release(tmp_path, bc, release):
    keys, _, out = release
    image = tmp_path / "app.bin"
    image.write_bytes(os.urandom(70000))
    rc, msg, err = bc("release", "sign", "--key", keys / "release-key.pem", "--version",
                      "2.0.0", "--image", image, "--out", out)
    assert rc == 0, err
    text = (out / "2.0.0" / "manifest.json").read_text()
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert text == '{"image":{"len":70000,"sha256":"%s"},"version":"2.0.0"}' % digest
    assert (out / "2.0.0" / "firmware.bin").read_bytes() == image.read_bytes()
    pub = (keys / "release-key.pub").read_text()
    assert verify_sig(pub, text.encode(), (out / "2.0.0" / "manifest.sig").read_text().strip())
    assert publish(bc, keys, out / "2.0.0", tmp_path / "served")[0] == 0


@pytest.mark.parametrize("tamper,message", [
    (lambda r: (r / "app.py").write_bytes(b"evil()\n"), "app.py does not match the manifest"),
    (lambda r: (r / "lib" / "util.py").unlink(), "lib/util.py: No such file"),
    (lambda r: (r / "manifest.json").write_text(
        (r / "manifest.json").read_text().replace('"len":6,', '"len":7,')), "bad signature"),
    (lambda r: (r / "manifest.sig").write_text("00" * 64), "bad signature"),
    (lambda r: (r / "manifest.sig").unlink(), "manifest.sig: No such file"),
])
def test_publish_refuses_a_tampered_release(tmp_path, bc, release, tamper, message):
    keys, _, out = release
    tamper(out / "1.2.0")
    rc, msg, err = publish(bc, keys, out / "1.2.0", tmp_path / "served")
    assert rc == 1 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "served" / "1.2.0").exists()
    assert not [p for p in (tmp_path / "served").iterdir()] if (tmp_path / "served").exists() \
        else True


def test_publish_refuses_another_key(tmp_path, bc, release):
    keys, _, out = release
    assert bc("release", "keygen", "--out", tmp_path / "other")[0] == 0
    rc, _, err = publish(bc, tmp_path / "other", out / "1.2.0", tmp_path / "served")
    assert rc == 1 and "bad signature" in err


def test_release_errors_are_one_line(tmp_path, bc, release):
    keys, _, out = release
    pem = keys / "release-key.pem"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad name.py").write_text("x")
    (tmp_path / "reserved").mkdir()
    (tmp_path / "reserved" / "manifest.json").write_text("{}")
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / ("x" * 62 + ".py")).write_text("x")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "big.py").write_bytes(b"#" * ((1 << 20) + 1))
    (tmp_path / "big" / "version.py").write_text('VERSION = "1.3.0"\n')
    (tmp_path / "empty.bin").write_bytes(b"")
    cases = [
        (["release", "keygen", "--out", keys], "already exists"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "long", "--out",
          out], "at most 64 characters"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "big", "--out",
          out], "big.py: length 1048577, must be 0 to 1048576 bytes"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", "--image",
          tmp_path / "empty.bin", "--out", out], "firmware.bin: length 0, must be 1 to"),
        (["release", "sign", "--key", tmp_path / "none.pem", "--version", "1.3.0",
          tmp_path / "src", "--out", out], "none.pem: No such file"),
        (["release", "sign", "--key", keys / "release-key.pub", "--version", "1.3.0",
          tmp_path / "src", "--out", out], "not an unencrypted PEM private key"),
        (["release", "sign", "--key", pem, "--version", "1.3", tmp_path / "src", "--out", out],
         "bad version '1.3'"),
        (["release", "sign", "--key", pem, "--version", "1.03.0", tmp_path / "src", "--out",
          out], "bad version"),
        (["release", "sign", "--key", pem, "--version", "../x", tmp_path / "src", "--out",
          out], "bad version"),
        (["release", "sign", "--key", pem, "--version", "1.3.0\n", tmp_path / "src", "--out",
          out], "bad version"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "bad", "--out",
          out], "unsafe file name 'bad name.py'"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", tmp_path / "reserved",
          "--out", out], "manifest.json is reserved"),
        (["release", "sign", "--key", pem, "--version", "1.2.0", tmp_path / "src", "--out",
          out], "1.2.0 already exists"),
        (["release", "sign", "--key", pem, "--version", "1.3.0", "--out", out],
         "either SRC_DIR or --image"),
        (["release", "publish", out / "1.2.0", "--pub", tmp_path / "none.pub"], "No such file"),
        (["release", "publish", out / "1.2.0", "--pub", pem], "expected 130 hex chars"),
    ]
    for argv, message in cases:
        rc, _, err = bc(*argv)
        assert rc != 0 and message in err, (argv, err)
        assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["1.2.0"]     # nothing half-written


METER_CHECK = """
import sys
import fw_manifest
key, path, sig, running = sys.argv[1:5]
with open(path) as f:
    text = f.read()
try:
    m = fw_manifest.check(key, text, sig, running)
    print("ok %s %d" % (m["version"], len(m["files"])))
except fw_manifest.Refused as e:
    print("refused %s" % e)
"""


def test_the_meter_accepts_what_release_sign_signs(tmp_path, bc, release, interpreter):
    """The meter's own check (firmware/fw_manifest.py, p256.py) under MicroPython and
    CPython: the signed manifests pass, a changed one or another key does not."""
    keys, _, out = release
    image = tmp_path / "app.bin"
    image.write_bytes(os.urandom(5000))
    assert bc("release", "sign", "--key", keys / "release-key.pem", "--version", "2.0.0",
              "--image", image, "--out", out)[0] == 0
    assert bc("release", "keygen", "--out", tmp_path / "other")[0] == 0
    script = tmp_path / "check.py"
    script.write_text(METER_CHECK)
    pub = (keys / "release-key.pub").read_text().strip()
    other = (tmp_path / "other" / "release-key.pub").read_text().strip()
    changed = tmp_path / "changed.json"
    changed.write_text((out / "1.2.0" / "manifest.json").read_text().replace('"len":6', '"len":5'))

    def check(key, manifest, version):
        sig = (out / version / "manifest.sig").read_text().strip()
        return runner.run(interpreter, script, key, str(manifest), sig, "1.0.0").strip()
    assert check(pub, out / "1.2.0" / "manifest.json", "1.2.0") == "ok 1.2.0 5"
    assert check(pub, out / "2.0.0" / "manifest.json", "2.0.0") == "ok 2.0.0 1"
    assert check(pub, changed, "1.2.0") == "refused bad signature"
    assert check(other, out / "1.2.0" / "manifest.json", "1.2.0") == "refused bad signature"
