# Per-sample metering kernel: integer sums over one half cycle, V zero-crossing detection.
#
# Runs as @micropython.viper on the board (machine-word ints, no heap) and as plain
# Python on CPython; the source is the same. All state lives in one array('i') so
# nothing is allocated per sample or per call. Every stored value stays within
# +/-2**30 for 12-bit input and at most MAX_HALF_SAMPLES samples per half cycle.

try:
    import micropython

    _viper = micropython.viper
except (ImportError, AttributeError):  # CPython
    def _viper(f):
        return f

    ptr16 = ptr32 = object  # annotation names only viper understands

MAX_HALF_SAMPLES = 96  # forced half-cycle close; 96 * 2048**2 * 2 < 2**30
COEF_BITS = 14

# State slots (array('i'))
VOFF = 0      # integer DC offset of V (ADC counts)
IOFF = 1
COEF_A = 2    # phase correction, Q14: vs = (A*v[n] + B*v[n-1]) >> 14, paired with i[n-1]
COEF_B = 3
HYST = 4      # zero-crossing hysteresis (counts)
MIN_HALF = 5  # debounce: minimum samples per half cycle
MAX_HALF = 6  # forced close when no crossing arrives (interruptions)
POLARITY = 7  # 1 while in the positive half cycle
VPREV = 8
IPREV = 9
N = 10        # --- half-cycle sums, FIELDS of them, in this order ---
SV = 11       # sum v
SVV = 12      # sum v*v
SI = 13       # sum i
SII = 14      # sum i*i
SP = 15       # sum vs*i   (active power, phase corrected)
SVS = 16      # sum vs
SX = 17       # sum v[n-1]*i[n] - v[n]*i[n-1]  (sign of reactive power)
FIELDS = 8
POS = 18      # sample position in the current reading window
CAND_K = 19   # last sign change of v: position and the two samples around it
CAND_A = 20
CAND_B = 21
BOUNDARY = 22  # 0 none, 1 rising crossing (cycle start), 2 falling, 3 forced
CROSS_K = 23   # confirmed rising crossing: position, sample before, sample after
CROSS_A = 24
CROSS_B = 25
SLOTS = 26

RISING = 1
FALLING = 2
FORCED = 3


@_viper
def run(st: ptr32, vb: ptr16, ib: ptr16, k: int, n: int) -> int:
    """Consume samples vb[k:n], ib[k:n]; stop after a half-cycle boundary. Returns next k."""
    m = 1 << 31
    mask = (m << 1) - 1
    voff = int(st[0])
    ioff = int(st[1])
    ca = ((int(st[2]) & mask) ^ m) - m
    cb = ((int(st[3]) & mask) ^ m) - m
    hyst = int(st[4])
    minh = int(st[5])
    maxh = int(st[6])
    pol = int(st[7])
    vp = ((int(st[8]) & mask) ^ m) - m
    ip = ((int(st[9]) & mask) ^ m) - m
    cnt = int(st[10])
    sv = ((int(st[11]) & mask) ^ m) - m
    svv = int(st[12])
    si = ((int(st[13]) & mask) ^ m) - m
    sii = int(st[14])
    sp = ((int(st[15]) & mask) ^ m) - m
    svs = ((int(st[16]) & mask) ^ m) - m
    sx = ((int(st[17]) & mask) ^ m) - m
    pos = int(st[18])
    cand_k = int(st[19])
    cand_a = ((int(st[20]) & mask) ^ m) - m
    cand_b = ((int(st[21]) & mask) ^ m) - m
    rnd = 1 << 13
    edge = 0
    while k < n:
        v = int(vb[k]) - voff
        i = int(ib[k]) - ioff
        k += 1
        vs = (ca * v + cb * vp + rnd) >> 14
        cnt += 1
        pos += 1
        sv += v
        svv += v * v
        si += ip
        sii += ip * ip
        sp += vs * ip
        svs += vs
        sx += vp * i - v * ip
        if pol == 0:
            if v > 0 and vp <= 0:
                cand_k = pos
                cand_a = vp
                cand_b = v
            if v > hyst and cnt >= minh:
                edge = 1
                pol = 1
        else:
            if v < 0 and vp >= 0:
                cand_k = pos
                cand_a = vp
                cand_b = v
            if v < 0 - hyst and cnt >= minh:
                edge = 2
                pol = 0
        vp = v
        ip = i
        if edge == 0 and cnt >= maxh:
            edge = 3
        if edge != 0:
            break
    st[7] = pol
    st[8] = vp
    st[9] = ip
    st[10] = cnt
    st[11] = sv
    st[12] = svv
    st[13] = si
    st[14] = sii
    st[15] = sp
    st[16] = svs
    st[17] = sx
    st[18] = pos
    st[19] = cand_k
    st[20] = cand_a
    st[21] = cand_b
    st[22] = edge
    if edge == 1:
        st[23] = cand_k
        st[24] = cand_a
        st[25] = cand_b
    return k


@_viper
def wide_add(dst: ptr32, src: ptr32, start: int, count: int):
    """dst holds `count` wide values as (hi, lo) pairs, value = hi * 2**20 + lo, 0 <= lo < 2**20.
    Adds src[start:start+count] (each within +/-(2**30 - 2**20)) into them, with no heap use."""
    m = 1 << 31
    mask = (m << 1) - 1
    j = 0
    while j < count:
        x = ((int(src[start + j]) & mask) ^ m) - m
        hi = ((int(dst[2 * j]) & mask) ^ m) - m
        lo = int(dst[2 * j + 1]) + x
        hi += lo >> 20
        dst[2 * j] = hi
        dst[2 * j + 1] = lo & 0xFFFFF
        j += 1


@_viper
def clear(a: ptr32, start: int, stop: int):
    j = start
    while j < stop:
        a[j] = 0
        j += 1


@_viper
def copy(dst: ptr32, src: ptr32, count: int):
    j = 0
    while j < count:
        dst[j] = src[j]
        j += 1
