# Replays polyphase or multi-circuit samples through firmware/polyphase.py (metering_main.py
# --replay with a config whose wiring is not 1p2w) and prints JSON lines.

import array

import poly_reading
import polyphase

from boards.sim_board import PolyReplayBoard

BLOCK = 32


def replay(stream, cfg, rate, v_gain, i_gain, offsets_s, emit):
    pairs, nv = polyphase.layout(cfg)
    channels = nv + len(pairs)
    board = PolyReplayBoard(stream, rate, v_gain, i_gain, channels, nv, offsets_s or None)
    poly = polyphase.PolyMeter(cfg, board)
    reporter = poly_reading.PolyReporter(poly, cfg["demand_block_s"])
    poly.set_event_handler(emit)
    bufs = [array.array("H", [0] * BLOCK) for _ in range(channels)]
    while True:
        n = board.read(bufs)
        if n == 0:
            poly.finish()
            r = reporter.take()
            if r is not None:
                emit(r)
            break
        poly.feed(bufs, n)
        r = reporter.take()
        if r is not None:
            emit(r)
    return poly
