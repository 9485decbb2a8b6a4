# Wide integers held as (hi, lo) pairs in an array('i'): value = hi * 2**20 + lo, 0 <= lo < 2**20.
# Helpers here use small ints only (below 2**30), so they allocate nothing on 32-bit ports.

SHIFT = 20
LOW = 1 << SHIFT


def div(a, i, n):
    """floor(value / n) for the wide value whose hi word is a[i] (lo is a[i + 1]);
    0 < n < 2**19, and the quotient must itself fit a small int."""
    hi = a[i]
    lo = a[i + 1]
    neg = hi < 0
    if neg:  # negate: -(hi*2**20 + lo)
        if lo:
            hi = -hi - 1
            lo = LOW - lo
        else:
            hi = -hi
    q_hi = hi // n
    r = hi - q_hi * n
    r = (r << 10) | (lo >> 10)
    q_mid = r // n
    r = r - q_mid * n
    r = (r << 10) | (lo & 1023)
    q_lo = r // n
    q = (q_hi << SHIFT) + (q_mid << 10) + q_lo
    if neg:
        # floor of a negative quotient: -ceil(|x| / n)
        return -q - 1 if (r - q_lo * n) else -q
    return q


def value(a, i):
    """The wide value at a[i], a[i + 1] as a Python int (may allocate; not for hot paths)."""
    return a[i] * LOW + a[i + 1]
