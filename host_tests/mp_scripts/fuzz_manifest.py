# The `manifest` parser of the fuzz harness (mp_scripts/fuzz_parsers.py): an update's manifest
# text and signature as the `update` op receives them, under CPython and MicroPython.
#
# Input [text, sig]: fw_manifest.parse(text) must give a well-formed manifest or Refused,
# and fw_manifest.check_signature with a fixed release key must refuse every signature the
# fuzzer makes (it never holds the private key).

import fw_manifest
import version

KEY_HEX = ("04" "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
           "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")  # P-256's G

ALLOWED = (fw_manifest.Refused,)


class Crash(Exception):
    pass


def run_manifest(case):
    text, sig = case
    try:
        fw_manifest.check_signature(KEY_HEX, text, sig)
    except fw_manifest.Refused:
        pass
    else:
        raise Crash("a signature the fuzzer made was accepted")
    m = fw_manifest.parse(text)
    well_formed(m)


def well_formed(m):
    if version.parse(m["version"]) is None:
        raise Crash("version %r accepted" % (m["version"],))
    total = 0
    for f in m["files"]:
        if not fw_manifest.safe_path(f["path"]) or ".." in f["path"].split("/"):
            raise Crash("path %r accepted" % (f["path"],))
        if not isinstance(f["len"], int) or isinstance(f["len"], bool) or f["len"] < 0:
            raise Crash("len %r accepted" % (f["len"],))
        if len(f["sha256"]) != 64:
            raise Crash("sha256 %r accepted" % (f["sha256"],))
        total += f["len"]
    if total != m["total"] or not m["files"]:
        raise Crash("total %r for files %r" % (m["total"], m["files"]))
