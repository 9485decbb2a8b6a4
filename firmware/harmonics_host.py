"""Host only: a numpy twin of harmonics.accumulate(), bit-exact, for the firmware run under
CPython (replay, tests, the desktop app), where the viper source runs as plain Python at
about a microsecond per order per sample. harmonics.py takes it on CPython when numpy is
there; host_tests/test_harmonics.py checks it gives the firmware source's integers. Never
imported on a board."""

import harmonics as H
import kernel as K
import numpy as np


def table_cos(table, phase):
    j = phase >> K.TAB_SHIFT
    c = table[j]
    frac = phase & ((1 << K.TAB_SHIFT) - 1)
    return c + (((table[j + 1] - c) * frac + (1 << (K.TAB_SHIFT - 1))) >> K.TAB_SHIFT)


def accumulate(acc, st, vb, ib, k, n, ph):
    if n <= k:
        return
    count = n - k
    v = np.frombuffer(vb, dtype=np.uint16, count=n)[k:].astype(np.int64) - st[K.VOFF]
    i = np.frombuffer(ib, dtype=np.uint16, count=n)[k:].astype(np.int64) - st[K.IOFF]
    table = np.frombuffer(st, dtype=np.int32)[K.TAB:K.TAB + K.TAB_SIZE + 1].astype(np.int64)
    table -= K.TAB_BIAS
    steps = np.arange(1, count + 1, dtype=np.int64)
    phases = (ph + steps * st[K.INC]) & K.PHASE_MASK
    wph0, winc = acc[H.WPH], acc[H.WINC]
    wphs = wph0 + (steps - 1) * winc
    live = wphs < (1 << K.PHASE_BITS)
    w = np.where(live, (K.TAB_ONE - table_cos(table, np.minimum(wphs, K.PHASE_MASK)) + 1) >> 1, 0)
    acc[H.WPH] = int(wph0 + winc * int(np.count_nonzero(live)))
    vw = (v * w + 256) >> 9
    iw = (i * w + 256) >> 9
    orders = acc[H.ORDERS]
    if orders == 0:
        return
    # (h * ph) & mask is what the firmware's running sum (hph + ph) & mask gives
    hph = np.outer(np.arange(1, orders + 1, dtype=np.int64), phases) & K.PHASE_MASK
    c = table_cos(table, hph)
    s = table_cos(table, (hph - (K.TAB_QUARTER << K.TAB_SHIFT)) & K.PHASE_MASK)
    sums = np.stack([((vw * c + 64) >> 7).sum(axis=1), ((vw * s + 64) >> 7).sum(axis=1),
                     ((iw * c + 64) >> 7).sum(axis=1), ((iw * s + 64) >> 7).sum(axis=1)], axis=1)
    for index, value in enumerate(sums.ravel().tolist()):
        acc[H.HEAD + index] += value
