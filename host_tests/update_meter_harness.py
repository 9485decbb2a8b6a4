"""Shared by the meter update tests (test_update_meter*.py): releases signed here with the
`cryptography` package (P-256, DER -> r||s), and a Meter whose every "boot" is a fresh
process running host_tests/mp_scripts/update_meter.py over real files in a tmp dir (docs/ota.md).
"""

import hashlib
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from lab import runner

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "update_meter.py"
KEY = ec.derive_private_key(0x5EC12E7, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0xBADC0DE, ec.SECP256R1())


def pub_hex(key):
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint).hex()


def sign(text, key=KEY):
    der = key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return "%064x%064x" % (r, s)


def manifest_text(version, files=None, image=None):
    doc = {"version": version}
    if files is not None:
        doc["files"] = sorted(({"len": len(data), "path": path,
                                "sha256": hashlib.sha256(data).hexdigest()}
                               for path, data in files.items()), key=lambda f: f["path"])
    if image is not None:
        doc["image"] = {"len": len(image), "sha256": hashlib.sha256(image).hexdigest()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def release_files(version):
    rnd = bytes((i * 7919 + 13) % 251 for i in range(21000))
    return {
        "version.py": ('VERSION = "%s"\n\n\ndef parse(text):\n    return tuple(int(p) for p '
                       'in text.split("."))\n\n\ndef newer(a, b):\n    return parse(a) > '
                       'parse(b)\n' % version).encode(),
        "big.bin": rnd,
        "lib/extra.py": b"MARK = 'extra'\n",
        "empty.txt": b"",
    }


class Meter:
    """A meter's flash (base dir) and a release directory, booted one process at a time."""

    def __init__(self, interpreter, tmp_path, version="0.2.0", files=None, image=None,
                 key=KEY):
        self.interpreter = interpreter
        self.version = version
        self.base = tmp_path / "meter"
        self.base.mkdir(parents=True)
        self.release = tmp_path / "release" / version
        self.release.mkdir(parents=True)
        self.files = files if files is not None else (None if image else
                                                      release_files(version))
        for path, data in (self.files or {"firmware.bin": image}).items():
            (self.release / path).parent.mkdir(parents=True, exist_ok=True)
            (self.release / path).write_bytes(data)
        self.manifest = manifest_text(version, self.files, image)
        self.sig = sign(self.manifest, key)
        self.cfg = {"update_key": pub_hex(KEY), "update_probation_s": 300}

    def boot(self, *steps, **opts):
        doc = {"base": str(self.base), "release": str(self.release), "cfg": self.cfg,
               "steps": list(steps), "image_version": self.version}
        doc.update(opts)
        # an ESP32 with OTA partitions: the fake esp32 module (host_tests/fakes) on the path
        fakes = [runner.ROOT / "host_tests" / "fakes"] if doc.get("image") else []
        return json.loads(runner.run(self.interpreter, DRIVER, stdin=json.dumps(doc).encode(),
                                     timeout=600, extra=fakes))

    def offer(self):
        return ["update", self.manifest, self.sig]

    def pointer(self):
        p = self.base / "fw" / "current.json"
        return json.loads(p.read_text()) if p.exists() else None

    def landed(self, version):
        """True when fw/<version> holds exactly the release's files, byte for byte."""
        root = self.base / "fw" / version
        found = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                 if p.is_file()}
        return found == self.files

    def fw_entries(self):
        root = self.base / "fw"
        return sorted(os.listdir(root)) if root.exists() else []


def states(items):
    return [i["state"] for i in items]


def install(m):
    """Boot 1 of a good update: offered, downloaded, switched, acked."""
    out = m.boot(m.offer(), ["download", None], ["state"], ["ack"], ["state"])
    assert out["results"][0] == ["done", {"version": "0.2.0", "state": "downloading"}]
    return out


def esp_image(n):
    return bytes([0xE9]) + bytes((i * 31 + 7) % 256 for i in range(n - 1))  # 0xE9: app magic
