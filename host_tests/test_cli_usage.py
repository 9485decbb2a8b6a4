"""`backchannel` usage errors are one line and exit 2 (docs/headend.md), caught before any
request is made: a CA file that is not there or not a certificate, ARGS that are not strict
JSON (NaN, Infinity) or not JSON at all, a negative --timeout."""

import pytest

from headend.cli import main
from lab import runner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("argv,message", [
    (["devices", "--cacert", "/nonexistent"], "--cacert /nonexistent: no such file"),
    (["devices", "--cacert", "README.md"], "--cacert README.md: not a readable PEM CA"),
    (["send", "m", "set_time", '{"unix": NaN}'], "ARGS must be a JSON object: NaN is not JSON"),
    (["send", "m", "read", '{"x": Infinity}'], "Infinity is not JSON"),
    (["send", "m", "read", "{nope"], "ARGS must be a JSON object: Expecting property name"),
    (["send", "m", "read", "[1]"], "ARGS must be a JSON object, got list"),
    (["group", "send", "g", "read", "{nope"], "ARGS must be a JSON object"),
    (["send", "m", "read", "--wait", "--timeout", "-5"], "Invalid value for '--timeout'"),
    (["send", "m", "read", "--wait", "--timeout", "0"], "Invalid value for '--timeout'"),
])
def test_usage_errors_exit_2_in_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(runner.ROOT)
    monkeypatch.setenv("BACKCHANNEL_URL", "http://127.0.0.1:9")   # never reached
    monkeypatch.setenv("BACKCHANNEL_TOKEN", "t" * 32)
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2, err
    assert err.startswith("backchannel: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err and out == ""
