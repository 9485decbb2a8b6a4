"""config.validate (clear rejections, defaults accepted) and store records (round trip,
corruption always detected as CorruptRecord), in CPython and under MicroPython."""

import json
import random

import config  # noqa: E402
import pytest
import store  # noqa: E402
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "energy_config_store.py"

# (changes, substring of the expected ConfigError message)
REJECTED = [
    ({"bogus": 1}, "unknown setting 'bogus'"),
    ({"nominal_v": "230"}, "nominal_v must be a number, got '230'"),
    ({"nominal_v": None}, "nominal_v must be a number"),
    ({"nominal_v": [230]}, "nominal_v must be a number"),
    ({"v_cal": True}, "v_cal must be a number, got True"),
    ({"persist_s": 5.5}, "persist_s must be a whole number, got 5.5"),
    ({"dip_pct": 40}, "dip_pct must be between 50.0 and 99.0, got 40"),
    ({"persist_s": 1}, "persist_s must be between 5 and 3600, got 1"),
    ({"nominal_v": 501.0}, "nominal_v must be between"),
    ({"frequency": 55}, "frequency must be 50 or 60, got 55"),
    ({"frequency": 0}, "frequency must be 50 or 60"),
    ({"interruption_pct": 49, "dip_pct": 50},
     "interruption_pct + hysteresis_pct must stay below dip_pct"),
    ({"swell_pct": 101}, "swell_pct - hysteresis_pct must stay above 100"),
    ([["nominal_v", 230]], "config must be an object"),
]
ACCEPTED = [
    {},
    dict(config.DEFAULTS),
    {"nominal_v": 120, "frequency": 60.0, "persist_s": 5.0},
    {"dip_pct": 85.5, "swell_pct": 115, "hysteresis_pct": 0},
]


def driver(interpreter, *args, stdin=b""):
    return json.loads(runner.run(interpreter, DRIVER, *args, stdin=stdin))


def test_defaults_and_conversions():
    assert config.validate({}) == config.DEFAULTS
    assert config.validate(dict(config.DEFAULTS)) == config.DEFAULTS
    cfg = config.validate({"nominal_v": 120, "frequency": 60.0})
    assert type(cfg["nominal_v"]) is float and type(cfg["frequency"]) is int


@pytest.mark.parametrize("changes,message", REJECTED, ids=[m[:30] for _, m in REJECTED])
def test_validate_rejects_clearly(changes, message):
    with pytest.raises(config.ConfigError) as e:
        config.validate(changes)
    assert message in str(e.value)


def test_validate_same_under_both(interpreter):
    cases = [c for c, _ in REJECTED] + ACCEPTED
    out = driver(interpreter, "validate", stdin=json.dumps(cases).encode())
    for (changes, message), got in zip(REJECTED, out):
        assert got[:2] == ["rejected", "ConfigError"] and message in got[2], (changes, got)
    for changes, got in zip(ACCEPTED, out[len(REJECTED):]):
        assert got == ["ok", config.validate(changes)]


def test_non_finite_number_is_a_config_error(interpreter):
    out = driver(interpreter, "validate", stdin=b'[{"persist_s": 1e999}, {"frequency": -1e999}]')
    assert [o[:2] for o in out] == [["rejected", "ConfigError"]] * 2, out


def test_dip_end_threshold_must_not_exceed_declared():
    with pytest.raises(config.ConfigError):
        config.validate({"dip_pct": 99.0, "hysteresis_pct": 2.0})


JSON_VALUES = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=5)
               | st.floats(allow_nan=False, allow_infinity=False)
               | st.lists(st.integers(), max_size=2))


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(config.DEFAULTS) + ["x", "Nominal_v"]), JSON_VALUES,
                       max_size=4))
def test_validate_accepts_only_in_range_or_raises_config_error(changes):
    try:
        cfg = config.validate(changes)
    except config.ConfigError:
        return
    assert set(cfg) == set(config.DEFAULTS)
    for name, value in cfg.items():
        kind, low, high = config.RULES[name]
        assert type(value) is kind and low <= (len(value) if kind is str else value) <= high
    assert cfg["interruption_pct"] + cfg["hysteresis_pct"] < cfg["dip_pct"]


def test_config_save_load(tmp_path):
    assert config.load(str(tmp_path / "missing")) == config.DEFAULTS
    config.save(str(tmp_path / "cfg"), {"nominal_v": 120, "frequency": 60})
    assert config.load(str(tmp_path / "cfg"))["nominal_v"] == 120.0
    with pytest.raises(config.ConfigError):
        config.save(str(tmp_path / "bad"), {"frequency": 55})
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tmp").exists()


def test_record_round_trip_and_missing(tmp_path, interpreter):
    path = str(tmp_path / "rec")
    assert store.read_record(path) is None
    for payload in (b"", b"x", bytes(range(256)) * 3):
        store.write_record(path, payload)
        assert store.read_record(path) == payload
    out = driver(interpreter, "files", str(tmp_path))
    assert out["missing"] is None and out["read"] == '{"x": 1}'
    assert out["config"] == config.validate({"nominal_v": 120, "frequency": 60})
    assert out["config_missing"] == config.DEFAULTS


def corrupt(data, how, where, extra):
    if how == "truncate":
        return data[:where % len(data)]
    if how == "flip":
        bit = where % (8 * len(data))
        return data[:bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1:]
    return data + extra


CORRUPTION = st.tuples(st.sampled_from(["truncate", "flip", "append"]), st.integers(0, 10**6),
                       st.binary(min_size=1, max_size=20))


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=300), CORRUPTION)
def test_any_corruption_is_detected(payload, corruption):
    record = store.encode(payload)
    assert store.decode(record) == payload
    with pytest.raises(store.CorruptRecord):
        store.decode(corrupt(record, *corruption))


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise_anything_else(data):
    try:
        store.decode(data)
    except store.CorruptRecord:
        pass


def test_corrupt_file_raises_corrupt_record(tmp_path):
    path = str(tmp_path / "rec")
    store.write_record(path, b"payload")
    with open(path, "r+b") as f:
        f.truncate(9)
    with pytest.raises(store.CorruptRecord):
        store.read_record(path)


def test_corruption_detected_under_both(interpreter):
    rng = random.Random(7)
    good, bad = [], []
    for n in range(300):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        record = store.encode(payload)
        good.append((record.hex(), payload.hex()))
        how = ("truncate", "flip", "append")[n % 3]
        bad.append(corrupt(record, how, rng.randrange(10**6), bytes([rng.randrange(256)])).hex())
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(20))).hex() for _ in range(50)]
    records = [r for r, _ in good] + bad + garbage
    out = driver(interpreter, "decode", stdin=json.dumps(records).encode())
    assert out[:len(good)] == [["ok", p] for _, p in good]
    assert all(o[:2] == ["rejected", "CorruptRecord"] for o in out[len(good):]), out


# ---------------- the trust boundary: who may change which key ----------------
def test_every_key_has_one_row_and_a_class():
    names = [row[0] for row in config.KEYS]
    assert len(names) == len(set(names)) == len(config.DEFAULTS) == len(config.WHO)
    assert set(config.WHO.values()) <= {config.CONSOLE, config.UTILITY, config.OPERATOR}
    for row in config.KEYS:                      # every default passes its own rule
        assert config.check(row[0], row[1]) == row[1]


@pytest.mark.parametrize("name", ["device_id", "device_key", "server_url", "ca_file",
                                  "transport", "mqtt_host", "mqtt_port", "mqtt_tls", "wdt_s",
                                  "update_key"])
def test_identity_transport_ca_and_watchdog_are_console_only(name):
    for role in ("operator", "utility", "peer", None):
        assert "serial console" in config.refusal(name, role)


@pytest.mark.parametrize("name", ["v_cal", "i_cal", "phase_cal_deg", "nominal_v", "frequency",
                                  "demand_block_s", "persist_s"])
def test_billing_keys_need_a_utility_token(name):
    assert "utility token" in config.refusal(name, "operator")
    assert config.refusal(name, "utility") is None


def test_operational_keys_are_open_to_operators():
    assert config.refusal("report_s", "operator") is None
    assert config.refusal("dip_pct", "operator") is None
