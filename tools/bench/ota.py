"""Signed-update benchmark: one ECDSA P-256 verify (firmware/p256.py) on the MicroPython
unix port and on CPython, median of repeated runs, beside OpenSSL (the `cryptography`
package) as the baseline. Run by `make bench` after the metering table, or alone:

    .venv/bin/python -m bench.ota [--json] [--runs N]

Timings are reported, never asserted.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

from lab import runner

SCRIPT = runner.ROOT / "tools" / "bench" / "ota_mp.py"
MESSAGE_BYTES = 2000  # about a 40-file manifest


def signed_vector():
    """(key, message, signature, cryptography key object): a fixed key, manifest-sized text."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = ec.derive_private_key(0x6256_0ca1_1ab1e, ec.SECP256R1())
    message = (b'{"files":[' + b'{"len":1234,"path":"app.py","sha256":"%s"},' % (b"ab" * 32)
               * 40)[:MESSAGE_BYTES]
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = utils.decode_dss_signature(der)
    public = key.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    return public, message, r.to_bytes(32, "big") + s.to_bytes(32, "big"), key, der


def run_side(interpreter, runs, public, message, signature):
    cmd, env = runner.command(interpreter, SCRIPT, runs)
    vector = " ".join((public.hex(), message.hex(), signature.hex())).encode()
    p = subprocess.run(cmd, input=vector, capture_output=True, env=env, cwd=runner.ROOT,
                       timeout=300)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (interpreter, p.returncode, p.stderr.decode()))
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def openssl_ns(key, der, message, runs):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    public, algo, times = key.public_key(), ec.ECDSA(hashes.SHA256()), []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        public.verify(der, message, algo)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times)


def measure(runs=7):
    public, message, signature, key, der = signed_vector()
    mp = run_side("micropython", runs, public, message, signature)
    cp = run_side("cpython", runs, public, message, signature)
    return {"runs": runs, "message_bytes": len(message), "micropython_version": mp["version"],
            "micropython_ns": statistics.median(mp["verify_ns"]),
            "micropython_ns_range": [min(mp["verify_ns"]), max(mp["verify_ns"])],
            "micropython_heap_bytes": mp["heap_bytes"],
            "cpython_ns": statistics.median(cp["verify_ns"]),
            "cpython_ns_range": [min(cp["verify_ns"]), max(cp["verify_ns"])],
            "openssl_ns": openssl_ns(key, der, message, max(runs, 50))}


def rows(rep):
    return [
        {"measure": "p256.verify, MicroPython %s unix port" % rep["micropython_version"],
         "value": "%.1f ms" % (rep["micropython_ns"] / 1e6),
         "baseline": "%.3f ms OpenSSL" % (rep["openssl_ns"] / 1e6)},
        {"measure": "p256.verify, CPython, same firmware",
         "value": "%.1f ms" % (rep["cpython_ns"] / 1e6),
         "baseline": "%.3f ms OpenSSL" % (rep["openssl_ns"] / 1e6)},
        {"measure": "Heap allocated by one verify (MicroPython)",
         "value": "%.0f KiB" % (rep["micropython_heap_bytes"] / 1024),
         "baseline": "-"},
    ]


def print_table(report):
    from rich.console import Console
    from rich.table import Table

    table = Table(title="backchannel signed-update benchmark: ECDSA P-256 verify",
                  caption="median of %d runs, %d-byte manifest (SHA-256 included); "
                          "one verify per update, timings not asserted"
                  % (report["runs"], report["message_bytes"]))
    for name, justify in (("measure", "left"), ("value", "right"), ("baseline", "right")):
        table.add_column(name, justify=justify)
    for r in rows(report):
        table.add_row(r["measure"], r["value"], r["baseline"])
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--runs", type=int, default=7, help="timed verifies per interpreter")
    args = ap.parse_args(argv)
    try:
        report = measure(args.runs)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as e:
        print("ota bench could not run: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
