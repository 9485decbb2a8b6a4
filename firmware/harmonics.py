# Harmonic analysis for THD over each 10/12-cycle window (IEC 61000-4-7 window), without
# allocation: one DFT bin per harmonic order on the kernel's frequency-locked reference phase.
#
# The board samples at a fixed rate, so a window of whole cycles is whole only to a sample
# (about 0.16 % of it at 64 samples per cycle, where IEC 61000-4-7 asks 0.03 % for its
# rectangular weighting). A rectangular window would then leak the fundamental into every
# harmonic bin (0.3 % of the fundamental at 32 samples per cycle: a 30 % error on a 1 %
# harmonic), so samples are Hann-weighted, which IEC 61000-4-7 allows when the window is not
# synchronised. The weight follows the reference phase over the window's 10 (12) cycles.
#
# Per window: the bins of orders 1..H, as sums in acc. At the window's end, close() adds the
# squared magnitude of order 1 and the sum over orders 2..H, per channel, into wide (hi, lo)
# sums for the reading: THD = sqrt(sum over 2..H / order 1). All values stay within +/-2**30.

import kernel as K
from mpshim import MICROPYTHON, const, micropython, ptr16, ptr32

# acc layout (array('i')): header, then 4 sums per order (v cos, v sin, i cos, i sin)
WPH = const(0)           # window phase: 2**22 spans the whole window
WINC = const(1)          # its step per sample
ORDERS = const(2)        # H, the highest order analysed
HEAD = const(4)
# energy sums (array('i'), 4 wide values): V order 1, V orders 2..H, I order 1, I 2..H;
# with the spectrum on, then per order h = 2..H: V order h, I order h (wide values)
E_SIZE = const(8)
MAX_ORDER = const(50)    # IEC 61000-4-30 class A goes to the 50th

# kernel constants, repeated as literals for viper (checked below)
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
_SUM_SHIFT = const(7)    # (4 v * cos) >> 7: a window of 2304 full-scale samples stays < 2**30
_FRAC = const(4095)      # phase below one table step
_HALF = const(2048)
if (K.VOFF, K.IOFF, K.INC, K.TAB, K.PHASE_MASK, K.TAB_SHIFT, K.TAB_BIAS, K.TAB_ONE,
        K.TAB_QUARTER, K.TAB_SIZE - 1) != (_VOFF, _IOFF, _INC, _TAB, _PHASE_MASK, _TAB_SHIFT,
                                          _TAB_BIAS, _TAB_ONE, _TAB_QUARTER, _TAB_MASK):
    raise ImportError("harmonics.py and kernel.py disagree on the state layout")


def highest_order(samples_per_cycle):
    """The highest harmonic order below the Nyquist frequency (order h needs > 2h samples
    per cycle), capped at MAX_ORDER."""
    h = int(samples_per_cycle / 2)
    if 2 * h >= samples_per_cycle:
        h -= 1
    return min(h, MAX_ORDER)


def highest_group_order(samples_per_cycle):
    """The highest order whose IEC 61000-4-7 group (up to h + 1/2 times the fundamental)
    lies below the Nyquist frequency (it needs > 2h + 1 samples per cycle), capped."""
    h = int((samples_per_cycle - 1) / 2)
    if 2 * h + 1 >= samples_per_cycle:
        h -= 1
    return min(h, MAX_ORDER)


def check_order(order, samples_per_cycle, groups=False):
    """The order to analyse (0: the highest supported), or ValueError with the reason."""
    top = highest_order(samples_per_cycle)
    if order == 0:
        return highest_group_order(samples_per_cycle) if groups else top
    if order > top:
        raise ValueError("harmonic_order %d needs more than %d samples per cycle; the sample "
                         "rate gives %.1f, which supports orders up to %d"
                         % (order, 2 * order, samples_per_cycle, top))
    if groups and order > highest_group_order(samples_per_cycle):
        raise ValueError("harmonic_groups to order %d need more than %d samples per cycle (the "
                         "group reaches order %d.5); the sample rate gives %.1f, which supports "
                         "groups up to order %d" % (order, 2 * order + 1, order,
                                                    samples_per_cycle,
                                                    highest_group_order(samples_per_cycle)))
    return order


def sum_shift(max_window):
    """Right shift of the window sums before squaring, so they stay below 2**20."""
    top = max_window * ((4 * 2248 * _TAB_ONE + 64) >> _SUM_SHIFT)
    shift = 0
    while (top >> shift) >= (1 << 20):
        shift += 1
    return shift


@micropython.viper
def accumulate(acc: ptr32, st: ptr32, vb: ptr16, ib: ptr16, k: int, n: int, ph: int):
    """Add samples vb[k:n], ib[k:n] to the window's bins; ph is the kernel's reference phase
    before sample k (the kernel advances it by INC per sample, as here)."""
    m = 1
    m = m << 31
    mask = (m << 1) - 1
    voff = int(st[_VOFF])
    ioff = int(st[_IOFF])
    inc = int(st[_INC])
    wph = int(acc[WPH])
    winc = int(acc[WINC])
    top = HEAD + 4 * int(acc[ORDERS])
    while k < n:
        v = int(vb[k]) - voff
        i = int(ib[k]) - ioff
        k += 1
        ph = (ph + inc) & _PHASE_MASK
        w = 0
        if wph < _WINDOW_END:  # Hann weight, Q11, interpolated in the cosine table
            j = wph >> _TAB_SHIFT
            c = int(st[_TAB + j]) - _TAB_BIAS
            c += ((int(st[_TAB + j + 1]) - _TAB_BIAS - c) * (wph & _FRAC) + _HALF) >> _TAB_SHIFT
            w = (_TAB_ONE - c + 1) >> 1
            wph += winc
        vw = (v * w + 256) >> 9  # Q2: a quarter count
        iw = (i * w + 256) >> 9
        hph = ph
        a = HEAD
        while a < top:
            # cos and sin of h * phi, interpolated: a nearest-entry phase error (up to
            # 1/1024 cycle) would leak 0.03 % of the fundamental into every bin
            j = hph >> _TAB_SHIFT
            f = hph & _FRAC
            c = int(st[_TAB + j]) - _TAB_BIAS
            c += ((int(st[_TAB + j + 1]) - _TAB_BIAS - c) * f + _HALF) >> _TAB_SHIFT
            j = (j - _TAB_QUARTER) & _TAB_MASK
            s = int(st[_TAB + j]) - _TAB_BIAS
            s += ((int(st[_TAB + j + 1]) - _TAB_BIAS - s) * f + _HALF) >> _TAB_SHIFT
            acc[a] = (((int(acc[a]) & mask) ^ m) - m) + ((vw * c + 64) >> _SUM_SHIFT)
            acc[a + 1] = (((int(acc[a + 1]) & mask) ^ m) - m) + ((vw * s + 64) >> _SUM_SHIFT)
            acc[a + 2] = (((int(acc[a + 2]) & mask) ^ m) - m) + ((iw * c + 64) >> _SUM_SHIFT)
            acc[a + 3] = (((int(acc[a + 3]) & mask) ^ m) - m) + ((iw * s + 64) >> _SUM_SHIFT)
            hph = (hph + ph) & _PHASE_MASK
            a += 4
    acc[WPH] = wph


def energy_size(order, spectrum):
    """Words of the energy sums: per order too when `spectrum`."""
    return E_SIZE + (4 * (order - 1) if spectrum and order >= 2 else 0)


@micropython.viper
def close(acc: ptr32, en: ptr32, shift: int, spectrum: int):
    """End of a window: add its squared bin magnitudes into en (and per order from 2 with
    `spectrum`), clear the bins."""
    m = 1
    m = m << 31
    mask = (m << 1) - 1
    top = HEAD + 4 * int(acc[ORDERS])
    rnd = (1 << shift) >> 1
    a = HEAD
    while a < top:
        ev = 0 if a == HEAD else 2
        j = 0
        while j < 4:
            x = ((((int(acc[a + j]) & mask) ^ m) - m) + rnd) >> shift
            e = ev + (4 if j >= 2 else 0)
            # en[e], en[e + 1] (wide hi, lo) += x * x, in pieces below 2**23
            x1 = x >> 10
            x0 = x & 1023
            t = 2 * x1 * x0
            sq_lo = ((t & 1023) << 10) + x0 * x0
            sq_hi = x1 * x1 + (t >> 10)
            lo = int(en[e + 1]) + sq_lo
            en[e] = (((int(en[e]) & mask) ^ m) - m) + sq_hi + (lo >> 20)
            en[e + 1] = lo & 0xFFFFF
            if spectrum and a > HEAD:  # this order's own sums: E_SIZE + 4 (h - 2)
                e = E_SIZE + a - HEAD - 4 + (2 if j >= 2 else 0)
                lo = int(en[e + 1]) + sq_lo
                en[e] = (((int(en[e]) & mask) ^ m) - m) + sq_hi + (lo >> 20)
                en[e + 1] = lo & 0xFFFFF
            acc[a + j] = 0
            j += 1
        a += 4
    acc[WPH] = 0


if not MICROPYTHON:  # the viper source above runs slowly as plain Python: use its numpy twin
    source_accumulate = accumulate  # what a board runs (test_harmonics.py compares them)

    def use_host_twin():
        """Put the numpy twin (harmonics_host) in accumulate's place, or keep the source
        without numpy; done at the first call, since importing numpy costs a CPython run
        about 0.1 s of CPU and most runs (the CLI, most tests) never meter harmonics."""
        global accumulate
        try:
            from harmonics_host import accumulate as twin
        except ImportError:  # no numpy
            twin = source_accumulate
        accumulate = twin
        return twin

    def accumulate(acc, st, vb, ib, k, n, ph):  # noqa: F811
        return use_host_twin()(acc, st, vb, ib, k, n, ph)
