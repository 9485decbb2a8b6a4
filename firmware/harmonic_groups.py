# IEC 61000-4-7 harmonic groups and subgroups over the 10/12-cycle window, without
# allocation. Imported only by a meter with `harmonic_groups` on (docs/polyphase.md).
#
# The 5 Hz bins of the window (10 cycles at 50 Hz, 12 at 60 Hz: bin d of order h sits at
# h + d/cycles times the locked fundamental) are evaluated at their exact frequencies without
# a DFT per bin and per sample. Per order h the Hann-weighted samples are mixed down by h
# times the kernel's frequency-locked reference phase (as harmonics.py does for one bin) and
# summed into M = 4 * cycles interval sums S_m, one per quarter cycle of window phase, each
# sample spread over three neighbouring sums by quadratic B-spline weights (a smooth kernel:
# with rectangular intervals the fractional sample at each interval's edge would leak the
# fundamental into every bin; with half-cycle intervals an interharmonic 15 bins away would
# alias into a group's edge bin at 4 % of its magnitude, at quarter cycles 0.3 %). An
# interval's sum is complete when the window phase leaves it: rotate() then adds it into the
# bins d = -D..D (D = cycles / 2) of its order, turned by e^(-j 2 pi d m / M) and divided by
# the kernel's gain at d (sinc^3(pi d / M)), one complex multiply per bin per quarter cycle.
# At the window's end close() adds, per order and channel,
#   group    = sum of |C_d|^2 for |d| < D, plus half of |C_-D|^2 and |C_D|^2
#   subgroup = |C_-1|^2 + |C_0|^2 + |C_1|^2
# into wide (hi, lo) sums of the reading. The Hann window spreads a tone over three bins, so
# both are 1.5 times the rms^2 of what they hold; readings give them relative to order 1's.
#
# All values stay within +/-2**30: interval sums are shifted by the harmonics' sum shift
# before turning (so |S'| < 2**15), the turn factors are Q13 with gains up to 1.08
# (|S' * cos - S' * sin| < 2**30).

import math
from array import array

import harmonics as H
import kernel as K
from mpshim import MICROPYTHON, const, micropython, ptr16, ptr32

# g layout (array('i')): header, the turn table, then per order 1..H: 12 interval words (the
# three open sums S_m, S_m+1, S_m+2, each v cos, v sin, i cos, i sin), then the bins d = -D..D
# (4 words each: v cos, v sin, i cos, i sin)
SEG = const(0)       # the interval m (0..M-1) now being filled
PH = const(1)        # reference phase where accumulate() stopped
SEGS = const(2)      # M
DMAX = const(3)      # D
SHIFT = const(4)     # right shift of interval sums before turning
STRIDE = const(5)    # words per order
BASE = const(6)      # first order's words
ROT = const(8)       # (cos, sin) * gain in Q13 for |d| = 1..D, m = 0..M-1
OPEN = const(12)     # interval words per order
E_PER_ORDER = const(8)  # energy words per order: V group, V subgroup, I group, I subgroup

_WPH = const(0)
_WINC = const(1)
_ORDERS = const(2)
_HEAD = const(4)
_VOFF = const(0)
_IOFF = const(1)
_INC = const(105)
_TAB = const(106)
_PHASE_MASK = const(0x3FFFFF)
_WINDOW_END = const(0x400000)
_TAB_SHIFT = const(12)
_TAB_QUARTER = const(256)
_TAB_MASK = const(1023)
_TAB_BIAS = const(4096)
_TAB_ONE = const(2047)
_FRAC = const(4095)
_HALF = const(2048)
ROT_BITS = const(13)
if (H.WPH, H.WINC, H.ORDERS, H.HEAD, K.VOFF, K.IOFF, K.INC, K.TAB, K.PHASE_MASK,
        K.TAB_SHIFT, K.TAB_BIAS, K.TAB_ONE, K.TAB_QUARTER) != (
        _WPH, _WINC, _ORDERS, _HEAD, _VOFF, _IOFF, _INC, _TAB, _PHASE_MASK, _TAB_SHIFT,
        _TAB_BIAS, _TAB_ONE, _TAB_QUARTER):
    raise ImportError("harmonic_groups.py disagrees with harmonics.py or kernel.py")


def make(order, cycles, shift):
    """The state of groups for orders 1..order over windows of `cycles` cycles."""
    segs = 4 * cycles
    dmax = cycles // 2
    base = ROT + 2 * dmax * segs
    stride = OPEN + 4 * (2 * dmax + 1)
    g = array("i", [0] * (base + stride * order))
    g[SEGS] = segs
    g[DMAX] = dmax
    g[SHIFT] = shift  # harmonics' shift keeps a whole window < 2**20, so an interval
                      # (about 1/M of it, M >= 40) < 2**15 and a turned one < 2**29
    g[STRIDE] = stride
    g[BASE] = base
    one = 1 << ROT_BITS
    for d in range(1, dmax + 1):
        x = math.pi * d / segs
        gain = (x / math.sin(x)) ** 3  # 1 / the B-spline kernel's sinc^3 at bin d
        for m in range(segs):
            b = 2 * math.pi * d * m / segs
            r = ROT + 2 * ((d - 1) * segs + m)
            g[r] = int(math.floor(one * gain * math.cos(b) + 0.5))
            g[r + 1] = int(math.floor(one * gain * math.sin(b) + 0.5))
    return g


def reset(g):
    """Clear every open sum and bin (a window restarts)."""
    for j in range(g[BASE], len(g)):
        g[j] = 0
    g[SEG] = 0


@micropython.viper
def accumulate(g: ptr32, acc: ptr32, st: ptr32, vb: ptr16, ib: ptr16, k: int, n: int,
               ph: int) -> int:
    """Add samples vb[k:n], ib[k:n] to the open interval sums; ph is the reference phase
    before sample k. Stops before a sample in the next interval (call rotate(), then again
    from the returned k with g[PH] as ph); returns n when all are in."""
    m = 1
    m = m << 31
    mask = (m << 1) - 1
    voff = int(st[_VOFF])
    ioff = int(st[_IOFF])
    inc = int(st[_INC])
    wph = int(acc[_WPH])
    winc = int(acc[_WINC])
    segs = int(g[SEGS])
    seg = int(g[SEG])
    stride = int(g[STRIDE])
    base = int(g[BASE])
    top = base + stride * int(acc[_ORDERS])
    while k < n:
        if wph >= _WINDOW_END:  # past the window: no weight, only the phase moves on
            k += 1
            ph = (ph + inc) & _PHASE_MASK
            continue
        t = wph * segs
        if (t >> 22) > seg:
            break
        v = int(vb[k]) - voff
        i = int(ib[k]) - ioff
        k += 1
        ph = (ph + inc) & _PHASE_MASK
        j = wph >> _TAB_SHIFT  # Hann weight, Q11, as harmonics.accumulate
        c = int(st[_TAB + j]) - _TAB_BIAS
        c += ((int(st[_TAB + j + 1]) - _TAB_BIAS - c) * (wph & _FRAC) + _HALF) >> _TAB_SHIFT
        w = (_TAB_ONE - c + 1) >> 1
        wph += winc
        a = (t >> 11) & 2047  # position in the interval, Q11
        b2 = (a * a + 2048) >> 12  # quadratic B-spline weights: b0 + b1 + b2 = 1
        a = 2048 - a
        b0 = (a * a + 2048) >> 12
        vw = (v * w + 256) >> 9
        iw = (i * w + 256) >> 9
        v0 = (vw * b0 + 1024) >> 11
        v2 = (vw * b2 + 1024) >> 11
        v1 = vw - v0 - v2
        i0 = (iw * b0 + 1024) >> 11
        i2 = (iw * b2 + 1024) >> 11
        i1 = iw - i0 - i2
        hph = ph
        p = base
        while p < top:
            j = hph >> _TAB_SHIFT
            f = hph & _FRAC
            c = int(st[_TAB + j]) - _TAB_BIAS
            c += ((int(st[_TAB + j + 1]) - _TAB_BIAS - c) * f + _HALF) >> _TAB_SHIFT
            j = (j - _TAB_QUARTER) & _TAB_MASK
            s = int(st[_TAB + j]) - _TAB_BIAS
            s += ((int(st[_TAB + j + 1]) - _TAB_BIAS - s) * f + _HALF) >> _TAB_SHIFT
            g[p] = (((int(g[p]) & mask) ^ m) - m) + ((v0 * c + 64) >> 7)
            g[p + 1] = (((int(g[p + 1]) & mask) ^ m) - m) + ((v0 * s + 64) >> 7)
            g[p + 2] = (((int(g[p + 2]) & mask) ^ m) - m) + ((i0 * c + 64) >> 7)
            g[p + 3] = (((int(g[p + 3]) & mask) ^ m) - m) + ((i0 * s + 64) >> 7)
            g[p + 4] = (((int(g[p + 4]) & mask) ^ m) - m) + ((v1 * c + 64) >> 7)
            g[p + 5] = (((int(g[p + 5]) & mask) ^ m) - m) + ((v1 * s + 64) >> 7)
            g[p + 6] = (((int(g[p + 6]) & mask) ^ m) - m) + ((i1 * c + 64) >> 7)
            g[p + 7] = (((int(g[p + 7]) & mask) ^ m) - m) + ((i1 * s + 64) >> 7)
            g[p + 8] = (((int(g[p + 8]) & mask) ^ m) - m) + ((v2 * c + 64) >> 7)
            g[p + 9] = (((int(g[p + 9]) & mask) ^ m) - m) + ((v2 * s + 64) >> 7)
            g[p + 10] = (((int(g[p + 10]) & mask) ^ m) - m) + ((i2 * c + 64) >> 7)
            g[p + 11] = (((int(g[p + 11]) & mask) ^ m) - m) + ((i2 * s + 64) >> 7)
            hph = (hph + ph) & _PHASE_MASK
            p += stride
    acc[_WPH] = wph
    g[PH] = ph
    return k


@micropython.viper
def rotate(g: ptr32, acc: ptr32):
    """The open interval g[SEG] is complete: add it into its order's sum in acc (so THD and
    the per-order spectrum are as without groups) and, turned, into the bins; the next two
    open sums move up."""
    m = 1
    m = m << 31
    mask = (m << 1) - 1
    segs = int(g[SEGS])
    dmax = int(g[DMAX])
    shift = int(g[SHIFT])
    stride = int(g[STRIDE])
    idx = int(g[SEG])
    while idx >= segs:
        idx -= segs
    rnd = (1 << shift) >> 1
    p = int(g[BASE])
    top = p + stride * int(acc[_ORDERS])
    a = _HEAD
    while p < top:
        ch = 0
        while ch < 4:
            x = ((int(g[p + ch]) & mask) ^ m) - m
            y = ((int(g[p + ch + 1]) & mask) ^ m) - m
            acc[a + ch] = (((int(acc[a + ch]) & mask) ^ m) - m) + x
            acc[a + ch + 1] = (((int(acc[a + ch + 1]) & mask) ^ m) - m) + y
            x = (x + rnd) >> shift
            y = (y + rnd) >> shift
            b = p + OPEN + 4 * dmax + ch  # bin d = 0
            g[b] = (((int(g[b]) & mask) ^ m) - m) + x
            g[b + 1] = (((int(g[b + 1]) & mask) ^ m) - m) + y
            d = 1
            r = ROT + 2 * idx
            while d <= dmax:
                co = ((int(g[r]) & mask) ^ m) - m
                si = ((int(g[r + 1]) & mask) ^ m) - m
                xc = x * co
                ys = y * si
                yc = y * co
                xs = x * si
                q = b + 4 * d  # bin +d: (x - jy) e^(-j beta)
                g[q] = (((int(g[q]) & mask) ^ m) - m) + ((xc - ys + 4096) >> ROT_BITS)
                g[q + 1] = (((int(g[q + 1]) & mask) ^ m) - m) + ((yc + xs + 4096) >> ROT_BITS)
                q = b - 4 * d  # bin -d: (x - jy) e^(+j beta)
                g[q] = (((int(g[q]) & mask) ^ m) - m) + ((xc + ys + 4096) >> ROT_BITS)
                g[q + 1] = (((int(g[q + 1]) & mask) ^ m) - m) + ((yc - xs + 4096) >> ROT_BITS)
                d += 1
                r += 2 * segs
            ch += 2
        j = 0
        while j < 8:
            g[p + j] = g[p + j + 4]
            j += 1
        while j < OPEN:
            g[p + j] = 0
            j += 1
        p += stride
        a += 4
    g[SEG] = int(g[SEG]) + 1


def flush(g, acc):
    """End of a window: the three open sums go in (the last ones wrap to intervals 0, 1)."""
    for _ in range(3):
        rotate(g, acc)
    g[SEG] = 0


@micropython.viper
def close(g: ptr32, en: ptr32, off: int, orders: int):
    """Add each order's group and subgroup energies into en[off + 8 (h - 1) ...] (wide:
    V group, V subgroup, I group, I subgroup) and clear the bins."""
    m = 1
    m = m << 31
    mask = (m << 1) - 1
    dmax = int(g[DMAX])
    stride = int(g[STRIDE])
    p = int(g[BASE])
    e0 = off
    h = 0
    while h < orders:
        b = p + OPEN
        d = 0 - dmax
        while d <= dmax:
            j = 0
            while j < 4:
                x = ((int(g[b + j]) & mask) ^ m) - m
                if x < 0:
                    x = 0 - x
                x1 = x >> 10  # x * x in pieces below 2**26
                x0 = x & 1023
                t = 2 * x1 * x0
                lo = ((t & 1023) << 10) + x0 * x0
                hi = x1 * x1 + (t >> 10)
                if d == dmax or d == 0 - dmax:  # the group's edge bins count half
                    lo = ((hi & 1) << 19) + (lo >> 1)
                    hi = hi >> 1
                e = e0 + (4 if j >= 2 else 0)  # group
                s = int(en[e + 1]) + lo
                en[e] = (((int(en[e]) & mask) ^ m) - m) + hi + (s >> 20)
                en[e + 1] = s & 0xFFFFF
                if d * d <= 1:  # subgroup (never an edge: D >= 5)
                    e += 2
                    s = int(en[e + 1]) + lo
                    en[e] = (((int(en[e]) & mask) ^ m) - m) + hi + (s >> 20)
                    en[e + 1] = s & 0xFFFFF
                g[b + j] = 0
                j += 1
            b += 4
            d += 1
        p += stride
        e0 += E_PER_ORDER
        h += 1


def readout(en, off, orders):
    """A reading's group keys from its energy sums: gv, gi (groups of orders 2..H) and sgv,
    sgi (subgroups) in percent of order 1's group (subgroup), and the total distortions of
    IEC 61000-4-7 thdg_v, thdg_i (groups) and thds_v, thds_i (subgroups), in percent."""
    import wide

    out = {}
    for j, kind, prefix in ((0, "v", "g"), (2, "v", "sg"), (4, "i", "g"), (6, "i", "sg")):
        e1 = wide.value(en, off + j)
        pct = []
        total = 0
        for h in range(2, orders + 1):
            eh = max(wide.value(en, off + E_PER_ORDER * (h - 1) + j), 0)
            total += eh
            pct.append(round(100.0 * math.sqrt(eh / e1), 4) if e1 > 0 else None)
        out[prefix + kind] = pct
        out["thd%s_%s" % ("g" if prefix == "g" else "s", kind)] = (
            100.0 * math.sqrt(total / e1) if e1 > 0 else None)
    return out


if not MICROPYTHON:  # the viper source runs slowly as plain Python: use its numpy twin
    source_accumulate = accumulate  # what a board runs (test_harmonic_groups.py compares)
    source_rotate = rotate

    def use_host_twin():
        """Put the numpy twin (harmonic_groups_host) in place of accumulate and rotate, or
        keep the source without numpy; at the first call, as harmonics.use_host_twin."""
        global accumulate, rotate
        try:
            from harmonic_groups_host import accumulate, rotate
        except ImportError:  # no numpy
            accumulate, rotate = source_accumulate, source_rotate

    def accumulate(g, acc, st, vb, ib, k, n, ph):  # noqa: F811
        use_host_twin()
        return accumulate(g, acc, st, vb, ib, k, n, ph)

    def rotate(g, acc):  # noqa: F811
        use_host_twin()
        return rotate(g, acc)
