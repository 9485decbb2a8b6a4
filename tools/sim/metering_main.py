# Runs the firmware's metering on the simulated board and prints JSON lines.
#
#   micropython tools/sim/metering_main.py SCENARIO.json [--seconds N] [--realtime] [--state DIR]
#   micropython tools/sim/metering_main.py --replay rate=HZ v_gain=V i_gain=A [delay_us=US]
#                                  [config=JSON] < little-endian float32 (v, i) pairs
#
# Run it through tools/lab/runner.py, which puts firmware/ and the boards package on the path.

import array
import json
import sys
import time

import config
import metering
import reading
from energy import RegisterStore, SavePolicy

from boards.sim_board import ReplayBoard, SimBoard

BLOCK = 32


def _emit(record):
    sys.stdout.write(json.dumps(record))
    sys.stdout.write("\n")


def run(board, cfg, seconds=None, realtime=False, state_dir=None, emit=_emit):
    meter = metering.Meter(cfg, board)
    reporter = reading.Reporter(meter, cfg["demand_block_s"])
    regs = None
    if state_dir:
        regs = RegisterStore(state_dir + "/energy")
        saved = regs.load()
        if saved is not None:
            meter.restore_energy(saved)
        if regs.damaged:
            emit({"type": "notice", "what": "energy slot damaged", "slots": regs.damaged})
    meter.on_event = emit
    vbuf = array.array("H", [0] * BLOCK)
    ibuf = array.array("H", [0] * BLOCK)
    limit = int(seconds * board.sample_rate) if seconds else None
    done = 0
    persist = SavePolicy(cfg["persist_s"], meter)
    started = time.ticks_ms() if realtime else 0
    while limit is None or done < limit:
        n = board.read(vbuf, ibuf)
        if n == 0:
            meter.finish()
            r = reporter.take()
            if r is not None:
                emit(r)
            break
        meter.feed(vbuf, ibuf, n)
        done += n
        r = reporter.take()
        if r is not None:
            emit(r)
        if regs is not None and persist.due(done / board.sample_rate):
            meter.fold_energy()
            regs.save(meter.registers)
        if realtime:
            ahead = int(done * 1000 / board.sample_rate) - time.ticks_diff(time.ticks_ms(), started)
            if ahead > 0:
                time.sleep_ms(ahead)
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()
    return meter


def main(argv):
    if argv and argv[0] == "--replay":
        opts = {"delay_us": "0", "config": "{}"}
        for a in argv[1:]:
            key, _, val = a.partition("=")
            opts[key] = val
        cfg = config.validate(json.loads(opts["config"]))
        if cfg["wiring"] != "1p2w":
            import poly_main

            offsets = [float(x) * 1e-6 for x in opts.get("offsets_us", "").split(",") if x]
            poly_main.replay(sys.stdin.buffer, cfg, float(opts["rate"]), float(opts["v_gain"]),
                             float(opts["i_gain"]), offsets, _emit)
            return 0
        board = ReplayBoard(sys.stdin.buffer, float(opts["rate"]), float(opts["v_gain"]),
                            float(opts["i_gain"]))
        board.channel_delay_s = float(opts["delay_us"]) * 1e-6
        run(board, cfg)
        return 0
    if not argv:
        sys.stderr.write(__doc__ if __doc__ else "usage: metering_main.py SCENARIO.json\n")
        return 2
    with open(argv[0]) as f:
        scenario = json.load(f)
    opts = {"seconds": None, "realtime": False, "state": None}
    k = 1
    while k < len(argv):
        if argv[k] == "--seconds":
            opts["seconds"] = float(argv[k + 1])
            k += 1
        elif argv[k] == "--realtime":
            opts["realtime"] = True
        elif argv[k] == "--state":
            opts["state"] = argv[k + 1]
            k += 1
        k += 1
    cfg = config.validate(scenario.get("config", {}))
    if cfg["wiring"] != "1p2w":   # three_phase.json, multi_circuit.json
        import poly_main

        from boards.sim_poly import board_for
        poly_main.run(board_for(scenario, cfg), cfg, _emit, opts["seconds"], opts["realtime"])
        return 0
    run(SimBoard(scenario), cfg, opts["seconds"], opts["realtime"], opts["state"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
