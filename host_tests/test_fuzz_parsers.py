"""Fuzz every parser with hypothesis: no crash (only the documented clear errors) and no hang.

Parsers: the meter's HTTP response parser (httpc, through a fake stream), the work decoder
(ops.Dispatcher.handle) and the response envelope (comms.apply_response), config validation
and config files, outbox segment recovery, CSV and COMTRADE replay input (tools/waveform.py)
and the head-end's POST /v1/exchange (arbitrary bodies and signatures, TestClient).

The firmware cases run in-process under CPython (hypothesis) and, for a few hundred
hypothesis-generated inputs per parser, under the real MicroPython unix port through
drivers/fuzz_parsers.py (the same harness code).

Examples per parser: BC_FUZZ_EXAMPLES (default 200, for `make test`); tools/fuzz.py runs
the long campaign with 100000. BC_FUZZ_MP_EXAMPLES (default 300): inputs per parser under
MicroPython. BC_SCHEMA_EXAMPLES (default 10): schemathesis examples per API operation and
mode. BC_FUZZ_STATS names a file to which each test appends a JSON
line {"parser", "examples", "outcomes", "seconds"} (tools/fuzz.py prints them).
"""

import collections
import json
import os
import struct
import sys
import tempfile
import time
from binascii import crc32, hexlify
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st

import fw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "drivers"))
sys.path.insert(0, str(fw.FIRMWARE))
sys.path.insert(0, str(fw.ROOT / "tools"))

import fuzz_parsers as fz  # noqa: E402
import store  # noqa: E402
import waveform  # noqa: E402

EXAMPLES = int(os.environ.get("BC_FUZZ_EXAMPLES", "200"))
MP_EXAMPLES = int(os.environ.get("BC_FUZZ_MP_EXAMPLES", "300"))
CASE_SECONDS = 5.0          # the hang bound: no single input may take longer
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck), derandomize=False)


class Stats:
    """Outcome counts and the slowest case per parser, reported to BC_FUZZ_STATS."""

    def __init__(self, parser):
        self.parser = parser
        self.outcomes = collections.Counter()
        self.slowest = 0.0
        self.start = time.monotonic()

    def case(self, fn, *args):
        t = time.monotonic()
        out = fn(*args)
        took = time.monotonic() - t
        self.slowest = max(self.slowest, took)
        assert took < CASE_SECONDS, "%s: one input took %.1f s (hang bound %.1f s)" % (
            self.parser, took, CASE_SECONDS)
        self.outcomes[out] += 1
        return out

    def report(self, runtime="cpython", failed=False):
        n = sum(self.outcomes.values())
        path = os.environ.get("BC_FUZZ_STATS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"parser": self.parser, "runtime": runtime, "examples": n,
                                    "failed": failed, "outcomes": dict(self.outcomes),
                                    "slowest_s": round(self.slowest, 4),
                                    "seconds": round(time.monotonic() - self.start, 2)}) + "\n")
        return n

    def run(self, check, runtime="cpython"):
        """check(), then report (also when it failed)."""
        try:
            check()
        except BaseException:
            self.report(runtime, failed=True)
            raise
        return self.report(runtime)


# --- strategies ---

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
           | st.floats() | st.text(max_size=20))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
finite_scalars = (st.none() | st.booleans() | st.integers(-2**62, 2**62)
                  | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
# JSON the MicroPython json module can read back (no NaN/Infinity, ints of any size)
mp_json = st.recursive(finite_scalars | st.integers(), lambda c: st.lists(c, max_size=4)
                       | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)

# HTTP responses: structured (status line, headers, body) or raw bytes
tokens = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"200", b"OK", b"-1", b"99999",
                          b"2\xff0", b"\xc3\x28", b"", b" ", b"\t", b"\r", b"\n", b"\r\n",
                          b":", b"Content-Length", b"content-length", b"Connection",
                          b"close", b"0", b"5", b"+5", b"-5", b"1e3", b"262145", b"0x10",
                          b"X-BC-Signature", b"\x00", b"\xff\xfe"])
header = st.tuples(st.binary(max_size=12) | tokens, st.sampled_from([b":", b"", b": "]),
                   st.binary(max_size=12) | tokens).map(lambda t: b"".join(t) + b"\r\n")
status_line = (st.tuples(tokens | st.binary(max_size=8), st.just(b" "),
                         tokens | st.integers(-1000, 1000).map(lambda i: str(i).encode()),
                         st.just(b" "), tokens | st.binary(max_size=8))
               .map(lambda t: b"".join(t) + b"\r\n"))


@st.composite
def http_responses(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    body = draw(st.binary(max_size=64))
    head = [draw(status_line)] if draw(st.booleans()) else [b"HTTP/1.1 200 OK\r\n"]
    if draw(st.booleans()):
        head.append(b"Content-Length: %d\r\n" % (len(body) + draw(st.integers(-3, 3))))
    head += draw(st.lists(header, max_size=6 if draw(st.integers(0, 20)) else 70))
    end = draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return b"".join(head) + end + body[:draw(st.integers(0, len(body)))]


ids = st.text(max_size=12) | st.sampled_from(["w-00000001", "w-1"]) | json_values


def _work_items(values, args_values):
    item = st.fixed_dictionaries(
        {"id": st.sampled_from(["w-00000001", "w-2"]) | values,
         "op": st.sampled_from(sorted(fz.ops.OPS) + ["nope", ""]) | values,
         "role": st.sampled_from(["operator", "utility", "peer", "root"]) | values,
         "expires": st.sampled_from([1763769900, 0]) | values,
         "from": st.sampled_from(["operator:alice", "device:m"]) | values,
         "args": args_values.map(lambda a: json.dumps(a, separators=(",", ":")))
         | st.text(max_size=20) | values},
        optional={"sig": st.text(max_size=64) | values})
    return st.tuples(item | values, st.booleans())


def _op_args(values):
    return st.dictionaries(
        st.sampled_from(["unix", "changes", "seconds", "state", "note", "limit", "to", "op",
                         "args", "ref", "from", "result", "nominal_v", "frequency"]),
        values | st.dictionaries(st.sampled_from(sorted(fz.config.DEFAULTS)), values,
                                 max_size=3), max_size=4) | values


work_cases = _work_items(json_values, _op_args(json_values))
mp_work_cases = _work_items(mp_json, _op_args(mp_json))


def _responses(values, work, floats=st.floats()):
    return st.fixed_dictionaries({}, optional={
        "ack": st.integers(-5, 2**70) | values, "time": values | floats,
        "next": values, "more": values,
        "work": st.lists(work.map(lambda t: t[0]), max_size=3) | values}) | values


response_cases = _responses(json_values, work_cases)
mp_response_cases = _responses(mp_json, mp_work_cases,
                               st.floats(allow_nan=False, allow_infinity=False))


def _configs(values):
    names = st.sampled_from(sorted(fz.config.DEFAULTS) + ["bogus"]) | st.text(max_size=8)
    special = st.sampled_from([10**400, -10**400, 2**63, 1e308, -0.0, "", "http://x",
                               "0" * 32, "g" * 32, "mqtt", "a b", True, 50, 60, 55.5])
    return st.dictionaries(names, values | special, max_size=5) | values


config_cases = _configs(json_values)
mp_config_cases = _configs(mp_json)


@st.composite
def config_files(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    text = json.dumps(draw(mp_config_cases)).encode()
    if kind == 1:
        return text
    rec = store.encode(text)
    if kind == 2:
        return rec
    i = draw(st.integers(0, len(rec) - 1))
    return rec[:i] + bytes([draw(st.integers(0, 255))]) + rec[i + 1:]


def _record(payload):
    return store.encode(payload)


@st.composite
def segments(draw):
    chunks = []
    seq = draw(st.integers(-2, 5))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 6))
        if kind <= 2:                          # a good record (seq mostly increasing)
            seq += draw(st.integers(-1, 3))
            item = {"seq": seq, "kind": draw(st.sampled_from(["reading", "event", "result"])),
                    "body": {"i": seq}}
            chunks.append(_record(json.dumps(item).encode()))
        elif kind == 3:                        # a record with an odd payload
            chunks.append(_record(json.dumps(draw(mp_json)).encode()
                                  if draw(st.booleans()) else draw(st.binary(max_size=30))))
        elif kind == 4:                        # garbage, maybe with a stray magic
            chunks.append(draw(st.binary(max_size=40)) + draw(st.sampled_from([b"", b"BC1"])))
        elif kind == 5:                        # a header with a wild length
            chunks.append(b"BC1" + struct.pack("<I", draw(st.integers(0, 2**32 - 1))))
        else:                                  # a torn record
            rec = _record(json.dumps({"seq": seq + 1, "kind": "event", "body": {}}).encode())
            chunks.append(rec[:draw(st.integers(0, len(rec) - 1))])
    seg = b"".join(chunks)
    if draw(st.integers(0, 4)) == 0 and seg:   # flip a byte
        i = draw(st.integers(0, len(seg) - 1))
        seg = seg[:i] + bytes([seg[i] ^ draw(st.integers(1, 255))]) + seg[i + 1:]

    meta = (st.none() | st.binary(max_size=12).map(hexlify) |
            st.integers(-5, 2**40).map(lambda n: hexlify(store.encode(str(n).encode())))
            | st.text(max_size=6).map(lambda s: hexlify(store.encode(s.encode()))))
    acked, seqf = draw(meta), draw(meta)
    return [hexlify(seg).decode(), None if acked is None else acked.decode(),
            None if seqf is None else seqf.decode()]


STRATEGIES = {
    "http": http_responses().map(lambda b: hexlify(b).decode()),
    "work": work_cases,
    "response": response_cases,
    "config": config_cases,
    "cfgfile": config_files().map(lambda b: hexlify(b).decode()),
    "outbox": segments(),
}
MP_STRATEGIES = dict(STRATEGIES, work=mp_work_cases, response=mp_response_cases,
                     config=mp_config_cases)


# --- firmware parsers, CPython in-process ---

@pytest.mark.parametrize("parser", sorted(STRATEGIES))
def test_firmware_parser_cpython(parser, tmp_path):
    stats = Stats(parser)
    tmp = str(tmp_path)

    @FUZZ
    @given(STRATEGIES[parser])
    def check(value):
        try:
            out = stats.case(fz.run_case, parser, value, tmp)
        except Exception as exc:
            raise AssertionError("%s crashed on %r: %s: %s" % (parser, value, type(exc).__name__,
                                                                exc)) from exc
        assert out == "ok" or out.startswith("err:")

    assert stats.run(check) >= min(EXAMPLES, 50)


# --- firmware parsers, under the real MicroPython unix port ---

def _generate(strategy, n):
    """n hypothesis-generated inputs (generate phase only, no shrinking)."""
    out = []

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value):
        out.append(value)

    collect()
    return out


@pytest.mark.parametrize("parser", sorted(MP_STRATEGIES))
def test_firmware_parser_micropython(parser, tmp_path):
    cases = _generate(MP_STRATEGIES[parser], MP_EXAMPLES)
    stats = Stats(parser)
    lines = "".join(json.dumps([parser, c]) + "\n" for c in cases).encode()
    timeout = 60 + 0.05 * len(cases)
    out = fw.run("micropython", HERE / "drivers" / "fuzz_parsers.py", str(tmp_path),
                 stdin=lines, timeout=timeout)
    results = fw.records(out)
    assert len(results) == len(cases), "the driver stopped early"
    crashes = [(c, r) for c, r in zip(cases, results) if not (r == "ok" or r.startswith("err:"))]
    stats.outcomes.update(results)
    stats.report("micropython", failed=bool(crashes))
    assert not crashes, "MicroPython %s crashed on %d inputs, first: %r" % (
        parser, len(crashes), crashes[0])


# --- tools/waveform.py: CSV and COMTRADE replay input ---

csv_cell = st.sampled_from(["0", "1", "-1", "1e-3", "nan", "inf", "", " ", "x", "0x1", "1,5",
                            '"1"', "\x00", "\ufeff", "1e999", "t", "v", "i", "T", " V "]) | \
    st.floats().map(repr) | st.text(max_size=6)


@st.composite
def csv_files(draw):
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=300))
    header = draw(st.sampled_from(["t,v,i", "V,t,note,i", "t,v", "T, V, I", ""])
                  | st.lists(csv_cell, max_size=4).map(",".join))
    if draw(st.booleans()):              # mostly numeric, roughly uniform rows
        n = draw(st.integers(0, 30))
        step = draw(st.sampled_from([1e-3, 1.0, 0.0, -1e-3, 1e-300]))
        rows = ["%r,%r,%r" % (k * step * draw(st.sampled_from([1, 1, 1, 1.02])),
                              draw(st.floats(-1e6, 1e6)), draw(st.floats(-1e6, 1e6)))
                for k in range(n)]
    else:
        rows = draw(st.lists(st.lists(csv_cell, max_size=5).map(",".join), max_size=8))
    nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = nl.join([header] + rows) + draw(st.sampled_from(["", nl]))
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig"])), "surrogatepass")


def _comtrade_cfg_fields(ft, rate, n, nch):
    lines = [["fuzz", "pytest", "1999"], [str(nch), "%dA" % nch, "0D"]]
    units = ["V", "A", "kV", "kA"]
    for k in range(1, nch + 1):
        lines.append([str(k), "ch%d" % k, "A", "", units[(k - 1) % 4], "0.1", "0", "0",
                      "-32767", "32767", "1", "1", "P"])
    lines += [["50"], ["1"], [rate, n], ["01/06/2024", "12:00:00.000000"],
              ["01/06/2024", "12:00:00.000000"], [ft], ["1"]]
    return lines


@st.composite
def comtrade_files(draw):
    """(cfg bytes, dat bytes): a valid-shaped recording with fields mutated."""
    nch = draw(st.integers(0, 3))
    n = draw(st.integers(0, 8))
    ft = draw(st.sampled_from(["ASCII", "BINARY", "BINARY32", "FLOAT32", "ascii", "JUNK"]))
    lines = _comtrade_cfg_fields(ft, draw(st.sampled_from(["3200", "0", "-1", "1e9", "x"])),
                                 str(draw(st.sampled_from([n, n + 1, 0, -1, 10**6]))), nch)
    for _ in range(draw(st.integers(0, 4))):       # mutate fields
        li = draw(st.integers(0, len(lines) - 1))
        fi = draw(st.integers(0, len(lines[li])))
        val = draw(st.sampled_from(["", "x", "-1", "0", "1e400", "nan", "99999999999"])
                   | st.text(max_size=5))
        if fi < len(lines[li]):
            lines[li][fi] = val
        else:
            lines[li].append(val)
    if draw(st.integers(0, 5)) == 0:
        del lines[draw(st.integers(0, len(lines) - 1)):]
    cfg = "\r\n".join(",".join(f.replace(",", "") if f else f for f in line)
                      for line in lines).encode("utf-8", "surrogatepass") + b"\r\n"
    if ft.upper() == "ASCII" and draw(st.booleans()):
        rows = ["%d,%d,%s" % (k + 1, k * 312, ",".join(str(draw(st.integers(-40000, 40000)))
                                                        for _ in range(nch)))
                for k in range(n)]
        dat = "\r\n".join(rows).encode()
    elif ft.upper().startswith(("BINARY", "FLOAT")) and draw(st.booleans()):
        fmt = "<II" + ("h" if ft.upper() == "BINARY" else "i" if ft.upper() == "BINARY32"
                       else "f") * nch + "H"
        dat = b"".join(struct.pack(fmt, k + 1, k * 312, *([0] * nch), 0) for k in range(n))
        dat = dat[:len(dat) - draw(st.integers(0, 3))]
    else:
        dat = draw(st.binary(max_size=200))
    return cfg, dat


def _waveform(path):
    try:
        rate, v, i, t0 = waveform.load_timed(path)
    except waveform.WaveformError as exc:
        assert str(exc), "a WaveformError must say why"
        return "err:WaveformError"
    assert rate > 0 and len(v) == len(i) > 0
    return "ok"


def test_waveform_csv(tmp_path):
    stats = Stats("csv")
    path = tmp_path / "w.csv"

    @FUZZ
    @given(csv_files())
    def check(data):
        path.write_bytes(data)
        stats.case(_waveform, path)

    stats.run(check)


def test_waveform_comtrade(tmp_path):
    stats = Stats("comtrade")
    cfg_path, dat_path = tmp_path / "r.cfg", tmp_path / "r.dat"

    @FUZZ
    @given(comtrade_files())
    def check(files):
        cfg_path.write_bytes(files[0])
        dat_path.write_bytes(files[1])
        stats.case(_waveform, cfg_path)

    stats.run(check)


# --- the head-end's exchange endpoint ---

@pytest.fixture(scope="module")
def exchange_app(tmp_path_factory):
    from fastapi.testclient import TestClient
    from headend_harness import Headend

    he = Headend(tmp_path_factory.mktemp("fuzzhe"), max_body=4096, max_wait=0.0)
    key = fz_key = None
    from headend import devices
    key = devices.create(he.hub.db, "meter-f", poll=0)
    fz_key = key
    with TestClient(he.app) as client:
        yield he, client, fz_key


def _hmac(key_hex, data):
    import hashlib
    import hmac
    return hmac.new(bytes.fromhex(key_hex), data, hashlib.sha256).hexdigest()


@st.composite
def exchange_bodies(draw):
    """(raw body, signature mode): arbitrary bytes, arbitrary JSON, or request-shaped JSON
    with fields mutated, for the registered device or not."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        raw = draw(st.binary(max_size=300))
    elif kind == 1:
        raw = json.dumps(draw(json_values)).encode()
    else:
        body = {"v": 1, "device": "meter-f", "ts": time.time(), "nonce": os.urandom(8).hex(),
                "wait": 0, "room": 4, "done": [], "items": []}
        for name in draw(st.lists(st.sampled_from(sorted(body) + ["x"]), max_size=3)):
            if draw(st.booleans()):
                body[name] = draw(json_values)
            else:
                body.pop(name, None)
        if draw(st.booleans()):
            body["items"] = draw(st.lists(st.fixed_dictionaries(
                {"seq": st.integers(-2, 2**60) | json_values,
                 "kind": st.sampled_from(["reading", "event", "result", "presence", "send",
                                          "notice", "event_start"]) | json_values,
                 "body": st.dictionaries(st.sampled_from(["work", "status", "state", "to", "op",
                                                          "args", "ref", "note", "body"]),
                                         json_values | st.sampled_from(["w-00000001",
                                                                        "meter-f", "done"]),
                                         max_size=4) | json_values}), max_size=3))
        raw = json.dumps(body).encode()             # NaN and Infinity included
        if draw(st.integers(0, 9)) == 0:
            raw = raw * 20                      # oversized (max_body is 4096 here)
    sig = draw(st.sampled_from(["good", "none", "junk", "upper", "empty"]))
    return raw, sig, draw(st.text(max_size=70))


def test_headend_exchange(exchange_app):
    he, client, key = exchange_app
    stats = Stats("exchange")

    def post(raw, sig, junk):
        headers = {"Content-Type": "application/json"}
        if sig == "good":
            headers["X-BC-Signature"] = _hmac(key, raw)
        elif sig == "upper":
            headers["X-BC-Signature"] = _hmac(key, raw).upper()
        elif sig == "empty":
            headers["X-BC-Signature"] = ""
        elif sig == "junk":
            headers["X-BC-Signature"] = junk.encode("ascii", "replace").decode().replace(
                "\r", "").replace("\n", "").strip() or "x"
        r = client.post("/v1/exchange", content=raw, headers=headers)
        assert r.status_code in (200, 400, 401, 409, 413), (r.status_code, r.text, raw[:200])
        if r.status_code != 200:
            assert isinstance(r.json().get("error"), str) and r.json()["error"]
        else:
            assert r.headers["x-bc-signature"] == _hmac(key, r.content)
        return str(r.status_code)

    @FUZZ
    @given(exchange_bodies())
    def check(case):
        stats.case(post, *case)

    stats.run(check)


# --- the head-end API against its own OpenAPI spec (schemathesis) ---

import schemathesis  # noqa: E402

SCHEMA_EXAMPLES = int(os.environ.get("BC_SCHEMA_EXAMPLES", "10"))
SCHEMA_STATS = collections.Counter()


@pytest.fixture(scope="module")
def api_headend(tmp_path_factory):
    from headend import devices
    from headend_harness import Headend

    he = Headend(tmp_path_factory.mktemp("schema"), max_wait=0.0)
    for name in ("meter-a", "meter-b"):
        devices.create(he.hub.db, name, poll=0)
    return he


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_no_server_errors(api_headend, mode):
    """Every operation of /openapi.json, with schema-valid (positive) and -invalid
    (negative) inputs, operator and utility tokens: never a 5xx, and every error is
    {"error": ...}. (Schemathesis strategies driven by hypothesis directly: its pytest
    plugin does not load under this pytest.)"""
    from schemathesis.generation.modes import GenerationMode

    api = schemathesis.openapi.from_asgi("/openapi.json", api_headend.app)
    tokens = {"operator": api_headend.op_token, "utility": api_headend.util_token}
    failures = []
    operations = [r.ok() for r in api.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        strategy = operation.as_strategy(GenerationMode(mode))

        @settings(max_examples=SCHEMA_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate])
        @given(case=strategy, role=st.sampled_from(sorted(tokens)))
        def check(case, role):
            t = time.monotonic()
            response = case.call(headers={"Authorization": "Bearer %s" % tokens[role]})
            took = time.monotonic() - t
            SCHEMA_STATS[response.status_code] += 1
            bad = None
            if took > CASE_SECONDS:
                bad = "took %.1f s" % took
            elif response.status_code >= 500:
                bad = "status %d: %s" % (response.status_code, response.text[:300])
            elif response.status_code >= 400 and not isinstance(
                    _json_or_none(response).get("error"), str):
                bad = "error body without `error`: %s" % response.text[:300]
            if bad:
                failures.append("%s %s body=%r: %s" % (case.method, case.formatted_path,
                                                       case.body, bad))

        try:
            check()
        except Unsatisfiable:       # nothing to make invalid (e.g. GET /v1/health, negative)
            SCHEMA_STATS["no %s inputs" % mode] += 1
    assert not failures, "%d failures, first: %s" % (len(failures), failures[0])


def _json_or_none(response):
    try:
        out = response.json()
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def test_openapi_report():
    """Reports the schemathesis run above (BC_FUZZ_STATS)."""
    path = os.environ.get("BC_FUZZ_STATS")
    if path and SCHEMA_STATS:
        with open(path, "a") as f:
            f.write(json.dumps({"parser": "openapi", "runtime": "schemathesis",
                                "examples": SCHEMA_STATS.total(),
                                "outcomes": {str(k): v for k, v in SCHEMA_STATS.items()}})
                    + "\n")


def test_api_non_finite_and_huge_numbers(api_headend):
    """Found by fuzzing: NaN/Infinity (Python's json reads them) and numbers beyond an SQLite
    INTEGER gave 500s (the 422 body could not encode the echoed input; a group deadline or
    gid overflowed). Now clear 4xx errors."""
    from fastapi.testclient import TestClient

    h = {"Authorization": "Bearer %s" % api_headend.op_token,
         "Content-Type": "application/json"}
    with TestClient(api_headend.app) as c:
        c.post("/v1/groups", headers=h, json={"name": "gx", "members": ["meter-a"]})
        for value in ("NaN", "Infinity", "-Infinity", "1e300", "9.3e18"):
            for method, path, body in (
                    ("POST", "/v1/groups/gx/work", '{"op": "read", "deadline": %s}'),
                    ("POST", "/v1/devices/meter-a/work", '{"op": "read", "expires_in": %s}'),
                    ("PATCH", "/v1/devices/meter-a", '{"poll": %s}'),
                    ("POST", "/v1/devices", '{"id": "m-x", "poll": %s}')):
                r = c.request(method, path, headers=h, content=(body % value).encode())
                assert r.status_code in (400, 422), (path, value, r.status_code, r.text)
                assert r.json()["error"]
        for gid in ("0", "-1", "99999999999999999999999"):
            for method in ("GET", "DELETE"):
                r = c.request(method, "/v1/groups/gx/work/" + gid, headers=h)
                assert r.status_code in (404, 422), (gid, r.status_code, r.text)
