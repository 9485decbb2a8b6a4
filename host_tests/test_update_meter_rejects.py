"""Signed firmware updates the meter refuses (docs/ota.md), under MicroPython and CPython:
tampered files, bad signatures, downgrades, malformed manifests, a second update while one
runs, chunks that do not answer the fetch. Harness: update_meter_harness.py."""

import pytest
from update_meter_harness import KEY, OTHER_KEY, Meter, manifest_text, sign, states

pytestmark = pytest.mark.unit


def test_tampered_file_is_rejected(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    out = m.boot(m.offer(), ["download", None], ["state"], tamper={"big.bin": 9000})
    assert out["items"][-1] == {"version": "0.2.0", "state": "rejected",
                                "reason": "hash mismatch: big.bin"}
    assert "verified" not in states(out["items"])
    assert out["results"][2]["job"] is None
    assert m.pointer() is None and m.fw_entries() == []  # stage deleted, nothing switched
    assert not (m.base / "state" / "update.json").exists()
    out = m.boot(["state"])
    assert out["version"] == "0.1.0" and out["items"] == []


@pytest.mark.parametrize("case", ["other key", "edited text", "garbage sig", "no key"])
def test_bad_signature_is_rejected(interpreter, tmp_path, case):
    m = Meter(interpreter, tmp_path, key=OTHER_KEY if case == "other key" else KEY)
    text, sig = m.manifest, m.sig
    if case == "edited text":
        text = text.replace('"len":15', '"len":16')
        assert text != m.manifest
    if case == "garbage sig":
        sig = "zz" * 64
    if case == "no key":
        m.cfg["update_key"] = ""
    reason = "no update key configured" if case == "no key" else "bad signature"
    out = m.boot(["update", text, sig], ["fetch"])
    assert out["results"] == [["rejected", reason], None]
    assert out["items"] == [{"version": "0.2.0", "state": "rejected", "reason": reason}]
    assert out["served"]["chunks"] == 0 and m.fw_entries() == []


@pytest.mark.parametrize("offered", ["0.1.0", "0.0.9"])
def test_downgrade_is_rejected(interpreter, tmp_path, offered):
    m = Meter(interpreter, tmp_path, version=offered)
    out = m.boot(m.offer(), ["fetch"])
    reason = "version downgrade: running 0.1.0, offered %s" % offered
    assert out["results"] == [["rejected", reason], None]


@pytest.mark.parametrize("files, detail", [
    ({"../evil.py": b"x"}, "unsafe or missing path '../evil.py'"),
    ({"/abs.py": b"x"}, "unsafe or missing path '/abs.py'"),
    ({"a": b"x", "a/b.py": b"y"}, "a is both a file and a directory"),
    ({"sp ace.py": b"x"}, "unsafe or missing path 'sp ace.py'"),
])
def test_malformed_manifest_is_rejected(interpreter, tmp_path, files, detail):
    m = Meter(interpreter, tmp_path, files={"ok.py": b"1"})
    text = manifest_text("0.2.0", files)
    out = m.boot(["update", text, sign(text)])
    assert out["results"] == [["rejected", "bad manifest: " + detail]]
    assert m.fw_entries() == []


def test_second_update_while_one_runs(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    out = m.boot(m.offer(), ["download", 1], m.offer())
    assert out["results"][2] == ["rejected", "update already in progress: 0.2.0"]
    assert set(states(out["items"])) == {"downloading"}  # no `rejected` for the running job


def test_chunks_are_checked_strictly(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    stale = {"version": "0.2.0", "path": "big.bin", "offset": 4096, "size": 21000,
             "data": "QUJD"}
    wrong_size = dict(stale, offset=0, size=20999)
    out = m.boot(m.offer(), ["chunk", stale], ["fetch"], ["chunk", wrong_size], ["state"])
    assert out["results"][1] is False  # an answer to another fetch: ignored
    assert out["results"][2] == {"version": "0.2.0", "path": "big.bin", "offset": 0,
                                 "len": 4096}
    assert out["results"][3] is True and out["results"][4]["job"] is None
    assert out["items"][-1]["reason"] == "bad chunk: big.bin"
