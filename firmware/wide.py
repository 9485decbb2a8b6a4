# Wide integers held as (hi, lo) pairs in an array('i'): value = hi * 2**20 + lo, 0 <= lo < 2**20.
# Helpers here use small ints only (below 2**30), so they allocate nothing on 32-bit ports.

SHIFT = 20
LOW = 1 << SHIFT


def div(a, j, n):
    """floor(value_j / n) for the wide value at pair j of array a, n > 0 and below 2**19.
    The quotient must itself fit a small int."""
    hi = a[2 * j]
    lo = a[2 * j + 1]
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
    return -q if neg else q


def value(a, j):
    """The wide value as a Python int (allocates on 32-bit ports when large; not for hot paths)."""
    return a[2 * j] * LOW + a[2 * j + 1]
