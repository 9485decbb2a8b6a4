# Firmware-side energy register checks, run under MicroPython and CPython.
#   energy_registers.py sum < JSON [[units_per_mwh, [per-half-cycle amounts...]], ...]
#       prints [[import state, export state], ...] after Registers.add_active of each amount
#   energy_registers.py load PATH UNITS_PER_MWH
#       prints what RegisterStore(PATH).load did, or the exception it raised

import json
import sys

from energy import Registers, RegisterStore


def sums(cases):
    out = []
    for units_per_mwh, amounts in cases:
        regs = Registers(units_per_mwh)
        for a in amounts:
            regs.add_active(a)
        out.append([regs.import_wh.state(), regs.export_wh.state()])
    return out


def load(path, units_per_mwh):
    regs = Registers(units_per_mwh)
    rs = RegisterStore(path)
    try:
        saved = rs.load()
        if saved is not None:
            regs.restore(saved)
    except Exception as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
    return {"loaded": saved is not None, "gen": rs.gen, "damaged": rs.damaged,
            "state": regs.state()}


def main(argv):
    if argv[0] == "sum":
        out = sums(json.loads(sys.stdin.read()))
    else:
        out = load(argv[1], int(argv[2]))
    sys.stdout.write(json.dumps(out))


main(sys.argv[1:])
