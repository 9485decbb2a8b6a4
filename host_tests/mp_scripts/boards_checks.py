# Board drivers on the fake hardware (host_tests/fakes), under MicroPython and CPython.
#   boards_checks.py ROOT   prints one JSON document: what the tests in test_boards.py check.

import array
import json
import math
import sys

import machine  # the fake
import network
import rp2
from uctypes import addressof

from boards import esp32_board as besp
from boards import rp2_board as brp

ROOT = sys.argv[1]

CFG = ROOT + "/boards/boards.json"
OUT = {}


def sine(n, mid, amp, cycles=1):
    return [int(mid + amp * math.sin(2 * math.pi * cycles * k / n) + 0.5) for k in range(n)]


def outcome(fn):
    try:
        fn()
        return ["ok"]
    except besp.BoardError as e:
        return ["BoardError", str(e)]
    except brp.BoardError as e:
        return ["BoardError", str(e)]


def is_h(a):
    # MicroPython's array has no .typecode; its repr names the type code in both interpreters
    return type(a) is array.array and repr(a[:1]).startswith("array('H'")


def steps(values, modulo):
    """Set of successive differences (mod modulo): {1} for a gap-free ramp."""
    return sorted(set((values[k + 1] - values[k]) % modulo for k in range(len(values) - 1)))


def collect(board, sizes):
    out_v = []
    out_i = []
    for n in sizes:
        vb = array.array("H", [0] * n)
        ib = array.array("H", [0] * n)
        got = board.read(vb, ib)
        assert got == n
        out_v.extend(vb)
        out_i.extend(ib)
    return out_v, out_i


# ---------------- ESP32 ----------------
def esp32_board(v_codes, i_codes, hard_supported=True, **kw):
    machine.reset()
    machine.Timer.hard_supported = hard_supported
    # the ADC objects appear in the constructor: feed them as soon as they exist
    orig = machine.ADC.__init__

    def init(self, pin, atten=None):
        orig(self, pin, atten)
        codes = v_codes if self.pin == kw.get("v_pin", 36) else i_codes
        self.feed(codes)

    machine.ADC.__init__ = init
    try:
        return besp.Esp32Board(path=CFG, ticks=machine.fake_ticks_us, **kw)
    finally:
        machine.ADC.__init__ = orig


def esp32_checks():
    r = {}
    ramp_v = list(range(4096))
    ramp_i = [(k + 1000) % 4096 for k in range(4096)]
    b = esp32_board(ramp_v, ramp_i)
    adcs = machine.ADC.instances
    tim = machine.Timer.instances[0]
    r["pins"] = sorted(adcs)
    r["atten"] = [adcs[36].attn, adcs[39].attn, machine.ADC.ATTN_11DB]
    r["timer_inits"] = tim.inits
    r["timer_hard"] = b.timer_hard
    r["sample_rate"] = b.sample_rate
    r["rate_ratio"] = list(b.rate_ratio)
    r["channel_delay_s"] = b.channel_delay_s
    r["uv_per_count"] = [b.v_uv_per_count, b.i_uv_per_count, b.v_cal_source, b.i_cal_source]
    r["gains"] = [b.v_gain, b.i_gain]
    r["buffers"] = [is_h(b._vraw), is_h(b._iraw), len(b._vraw), len(b._iraw)]
    v, i = collect(b, [128, 100, 28, 200, 56, 1, 127, 128])
    r["read_steps"] = [steps(v, 4096), steps(i, 4096), [(i[k] - v[k]) % 4096 for k in (0, 99)]]
    r["counts"] = [len(v), b.overruns, b.lost]
    r["available"] = [b.available()]
    machine.idle()
    machine.idle()
    r["available"].append(b.available())
    collect(b, [100])
    r["available"].append(b.available())
    collect(b, [28])
    tim.drop(5)
    collect(b, [128] * 4)
    r["lost_after_drop5"] = b.lost
    # three halves complete while nobody reads: two are overwritten
    for _ in range(6):
        machine.idle()
    v, i = collect(b, [128, 128])
    r["overruns_after_3_halves"] = b.overruns
    r["steps_after_overrun"] = steps(v, 4096)
    b.deinit()

    # a sine at the bias point: least-squares slope; a flat input: single point
    b = esp32_board(sine(64, 1900, 700), sine(64, 1880, 500, 1))
    r["sine"] = [b.v_uv_per_count, b.v_cal_source, b.v_mid, b.i_uv_per_count, b.i_mid]
    b = esp32_board([2000], [1900])
    r["flat"] = [b.v_uv_per_count, b.v_cal_source, b.v_mid, b.i_uv_per_count, b.i_cal_source]
    b = esp32_board([2000], [1900], hard_supported=False)
    r["soft_fallback"] = [b.timer_hard, machine.Timer.instances[0].inits[-1]["hard"]]
    r["reject"] = {str(p): outcome(lambda p=p: esp32_board([2048], [2048], v_pin=p))
                   for p in (25, 26, 4, 0, 2, 12, 13, 14, 15, 27, 5, 21)}
    r["reject_i"] = outcome(lambda: esp32_board([2048], [2048], i_pin=25))
    r["accept"] = {str(p): outcome(lambda p=p: esp32_board([2048], [2048], v_pin=p))
                   for p in (32, 33, 34, 35)}
    machine.reset()
    network.WLAN.instances = []
    besp.connect_wifi("site", "pw")
    r["wifi"] = network.WLAN.instances[0].calls
    return r


# ---------------- RP2040 ----------------
def rp2_board(**kw):
    machine.reset()
    rp2.reset()
    return brp.Rp2Board(path=CFG, **kw)


def rp2_checks():
    r = {}
    r["divider"] = {str(fs): list(brp.adc_divider(fs)) for fs in (3200, 3840, 6400, 2700, 250000)}
    r["divider_too_fast"] = outcome(lambda: brp.adc_divider(260000))
    lut = brp.e11_table()
    r["lut"] = [is_h(lut), len(lut)]
    r["e11"] = {str(c): lut[c] for c in (0, 10, 15, 16, 100, 510, 511, 512, 513, 894, 895, 1406,
                                         1407, 1534, 1535, 1536, 1663, 1664, 2046, 2047, 2048,
                                         2430, 2431, 2558, 2559, 2560, 2942, 2943, 3453, 3454,
                                         3582, 3583, 3584, 3710, 3711, 4021, 4022, 4081, 4082,
                                         4095)}
    r["monotonic"] = all(lut[k + 1] >= lut[k] for k in range(4095))

    b = rp2_board()
    r["contract"] = [b.sample_rate, b.channel_delay_s, b.v_gain, b.i_gain, b.v_mid, b.i_mid]
    # interleaved FIFO: V ramps up, I ramps down
    fifo = []
    for k in range(4096):
        fifo.append(k)
        fifo.append(4095 - k)
    rp2.feed_fifo(fifo)
    v, i = collect(b, [128, 100, 28, 200, 56, 1, 127, 128])
    a, bb = b.dma
    r["dma"] = []
    for d in (a, bb):
        cfg = d.configs[0]
        r["dma"].append({"channel": d.channel, "read": cfg["read"], "count": cfg["count"],
                         "trigger": cfg["trigger"], "ctrl": rp2.DMA.unpack_ctrl(cfg["ctrl"]),
                         "irq_hard": d.hard, "has_irq": d.handler is not None,
                         "write_len": len(cfg["write"]),
                         "write_aligned": addressof(cfg["write"]) % (4 * b.block)})
    r["halves_adjacent"] = addressof(b._halves[1]) - addressof(b._halves[0])
    r["regs"] = {"cs": machine.mem32[brp.ADC_CS], "fcs": machine.mem32[brp.ADC_FCS],
                 "div": machine.mem32[brp.ADC_DIV]}
    r["raw"] = [is_h(b._raw), len(b._raw)]
    r["deinterleave"] = [v[:4], i[:4], v == [lut[k % 4096] for k in range(len(v))],
                         i == [lut[4095 - k % 4096] for k in range(len(i))], len(v)]
    r["available"] = [b.available()]
    machine.idle()
    r["available"].append(b.available())
    collect(b, [100])
    r["available"].append(b.available())
    collect(b, [28])
    rp2.halves_per_idle[0] = 3
    collect(b, [128])
    r["overruns"] = b.overruns
    b.stop()
    r["stopped"] = [machine.mem32[brp.ADC_CS], len(rp2.channels)]

    b = rp2_board(dnl_correction="none", v_adc=2, i_adc=0, sample_rate=3840)
    rp2.feed_fifo(fifo)
    v, i = collect(b, [128, 64, 64])
    r["raw_codes"] = [v == [k % 4096 for k in range(256)], i == [4095 - k for k in range(256)]]
    r["regs_b"] = {"cs": machine.mem32[brp.ADC_CS], "div": machine.mem32[brp.ADC_DIV]}
    r["reject"] = {str(ch): outcome(lambda ch=ch: rp2_board(v_adc=ch)) for ch in (3, 4, 1)}
    r["reject_block"] = outcome(lambda: rp2_board(block=100))
    network.WLAN.instances = []
    brp.connect_wifi("site", "pw")
    r["wifi"] = network.WLAN.instances[0].calls
    rp2_board(wifi_pm=0).wifi("site", "pw")
    r["wifi_cfg"] = network.WLAN.instances[1].calls[1]
    return r


OUT["esp32"] = esp32_checks()
OUT["rp2"] = rp2_checks()
print(json.dumps(OUT))
