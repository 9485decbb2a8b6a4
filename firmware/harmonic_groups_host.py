"""Host only: a numpy twin of harmonic_groups.accumulate(), bit-exact, for the firmware run
under CPython (replay, tests, the desktop app). host_tests/test_harmonic_groups.py checks it
gives the firmware source's integers. Never imported on a board."""

import harmonic_groups as G
import harmonics as H
import kernel as K
import numpy as np
from harmonics_host import table_cos


def accumulate(g, acc, st, vb, ib, k, n, ph):
    if n <= k:
        g[G.PH] = ph
        return k
    count = n - k
    inc = st[K.INC]
    steps = np.arange(1, count + 1, dtype=np.int64)
    phases = (ph + steps * inc) & K.PHASE_MASK  # after each sample
    wph0, winc = acc[H.WPH], acc[H.WINC]
    segs, seg = g[G.SEGS], g[G.SEG]
    wphs = wph0 + (steps - 1) * winc  # before each sample (live ones advance it)
    live = wphs < (1 << K.PHASE_BITS)
    t = wphs * segs
    later = np.flatnonzero(live & ((t >> 22) > seg))
    used = int(later[0]) if len(later) else count
    live = live[:used]
    nlive = int(np.count_nonzero(live))
    acc[H.WPH] = int(wph0 + winc * nlive)
    g[G.PH] = int(phases[used - 1]) if used else ph
    orders = acc[H.ORDERS]
    if nlive == 0 or orders == 0:
        return k + used
    idx = np.flatnonzero(live)
    v = np.frombuffer(vb, dtype=np.uint16, count=n)[k:k + used].astype(np.int64)[idx]
    i = np.frombuffer(ib, dtype=np.uint16, count=n)[k:k + used].astype(np.int64)[idx]
    v -= st[K.VOFF]
    i -= st[K.IOFF]
    table = np.frombuffer(st, dtype=np.int32)[K.TAB:K.TAB + K.TAB_SIZE + 1].astype(np.int64)
    table -= K.TAB_BIAS
    wp = wphs[idx]
    w = (K.TAB_ONE - table_cos(table, wp) + 1) >> 1
    a = (t[idx] >> 11) & 2047
    b2 = (a * a + 2048) >> 12
    b0 = ((2048 - a) * (2048 - a) + 2048) >> 12
    vw = (v * w + 256) >> 9
    iw = (i * w + 256) >> 9
    v0, v2 = (vw * b0 + 1024) >> 11, (vw * b2 + 1024) >> 11
    i0, i2 = (iw * b0 + 1024) >> 11, (iw * b2 + 1024) >> 11
    parts = (v0, i0, vw - v0 - v2, iw - i0 - i2, v2, i2)
    ph_s = phases[idx]
    hph = np.outer(np.arange(1, orders + 1, dtype=np.int64), ph_s) & K.PHASE_MASK
    c = table_cos(table, hph)
    s = table_cos(table, (hph - (K.TAB_QUARTER << K.TAB_SHIFT)) & K.PHASE_MASK)
    cols = []
    for x in parts:
        cols.append(((x * c + 64) >> 7).sum(axis=1))
        cols.append(((x * s + 64) >> 7).sum(axis=1))
    sums = np.stack(cols, axis=1).tolist()  # orders x 12, in g's word order
    base, stride = g[G.BASE], g[G.STRIDE]
    for h, row in enumerate(sums):
        p = base + stride * h
        for j, value in enumerate(row):
            g[p + j] += value
    return k + used


def rotate(g, acc):
    orders = acc[H.ORDERS]
    segs, dmax, shift, stride = g[G.SEGS], g[G.DMAX], g[G.SHIFT], g[G.STRIDE]
    idx = g[G.SEG] % segs
    base = g[G.BASE]
    if orders:
        words = np.frombuffer(g, dtype=np.int32)
        block = words[base:base + stride * orders].reshape(orders, stride)
        s = block[:, :G.OPEN].astype(np.int64)
        cur = s[:, :4]
        sums = np.frombuffer(acc, dtype=np.int32)
        sums[H.HEAD:H.HEAD + 4 * orders] += cur.ravel().astype(np.int32)
        z = (cur + ((1 << shift) >> 1)) >> shift
        x, y = z[:, 0::2], z[:, 1::2]  # orders x 2 (v, i)
        bins = block[:, G.OPEN:].reshape(orders, 2 * dmax + 1, 4).astype(np.int64)
        bins[:, dmax, 0::2] += x
        bins[:, dmax, 1::2] += y
        r = G.ROT + 2 * (np.arange(dmax) * segs + idx)
        co = np.array([g[j] for j in r.tolist()], dtype=np.int64)[None, :, None]
        si = np.array([g[j + 1] for j in r.tolist()], dtype=np.int64)[None, :, None]
        xc, ys, yc, xs = x[:, None] * co, y[:, None] * si, y[:, None] * co, x[:, None] * si
        one = 1 << (G.ROT_BITS - 1)
        up = slice(dmax + 1, 2 * dmax + 1)
        down = slice(dmax - 1, None, -1) if dmax else slice(0, 0)
        bins[:, up, 0::2] += (xc - ys + one) >> G.ROT_BITS
        bins[:, up, 1::2] += (yc + xs + one) >> G.ROT_BITS
        bins[:, down, 0::2] += (xc + ys + one) >> G.ROT_BITS
        bins[:, down, 1::2] += (yc - xs + one) >> G.ROT_BITS
        block[:, G.OPEN:] = bins.reshape(orders, -1).astype(np.int32)
        block[:, :8] = block[:, 4:12]
        block[:, 8:12] = 0
    g[G.SEG] += 1
