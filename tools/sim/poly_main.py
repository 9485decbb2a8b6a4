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
    return run(board, cfg, emit)


def run(board, cfg, emit, seconds=None, realtime=False):
    """Meter a polyphase board (its read(bufs) returns 0 at the end) and emit records;
    `make sim --offline` paces a simulated one in real time."""
    import time

    channels = board.channels
    poly = polyphase.PolyMeter(cfg, board)
    reporter = poly_reading.PolyReporter(poly, cfg["demand_block_s"])
    poly.set_event_handler(emit)
    bufs = [array.array("H", [0] * BLOCK) for _ in range(channels)]
    limit = int(seconds * board.sample_rate) if seconds else None
    done = 0
    started = time.ticks_ms() if realtime else 0
    while limit is None or done < limit:
        n = board.read(bufs)
        if n == 0:
            poly.finish()
            r = reporter.take()
            if r is not None:
                emit(r)
            break
        poly.feed(bufs, n)
        done += n
        r = reporter.take()
        if r is not None:
            emit(r)
        if realtime:
            ahead = int(done * 1000 / board.sample_rate) - time.ticks_diff(time.ticks_ms(),
                                                                           started)
            if ahead > 0:
                time.sleep_ms(ahead)
    return poly
