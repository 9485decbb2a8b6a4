# The metering hot path: per-sample sums, zero crossings and all per-half-cycle bookkeeping.
#
# Runs as @micropython.viper on the board (machine-word ints, no heap) and as plain Python
# on CPython; the source is the same. All state lives in one array('i'). run() consumes a
# whole block and returns early only when Python must look (an event may be starting or is
# in progress, a 10/12-cycle window or a reading window ends, start-up sync). Every stored
# value stays within +/-2**30 for 12-bit input and at most MAX_HALF_SAMPLES per half cycle.

from mpshim import const, micropython, ptr16, ptr32

# The decorators must be written literally as @micropython.viper: MicroPython's compiler
# recognises them by name, at compile time.

MAX_HALF_SAMPLES = const(96)  # forced half-cycle close; 96 * 2048**2 * 2 < 2**30
COEF_BITS = const(14)
WIDE_SHIFT = const(20)

# --- state slots (array('i')) ---
VOFF = const(0)          # integer DC offset of V (ADC counts)
IOFF = const(1)
COEF_A = const(2)        # phase correction, Q14: vs = (A*v[n] + B*v[n-1]) >> 14, paired with i[n-1]
COEF_B = const(3)
HYST = const(4)          # zero-crossing hysteresis (counts)
MIN_HALF = const(5)      # debounce: minimum samples per half cycle
MAX_HALF = const(6)      # current forced-close length (interruptions have no crossings)
POLARITY = const(7)      # 1 while in the positive half cycle
VPREV = const(8)
IPREV = const(9)
N = const(10)            # --- half-cycle sums, FIELDS of them, in this order ---
SV = const(11)           # sum v
SVV = const(12)          # sum v*v
SI = const(13)           # sum i
SII = const(14)          # sum i*i
SP = const(15)           # sum vs*i   (active power, phase corrected)
SQ = const(16)           # sum v[n-1]*i[n]  (with SP, gives the sign of reactive power)
FVC = const(17)          # sum v*cos(phi)  (fundamental phasor of v: phi is the
FVS = const(18)          # sum v*sin(phi)   frequency-locked reference phase)
FIC = const(19)          # sum i*cos(phi)
FIS = const(20)          # sum i*sin(phi)
FIELDS = const(11)
POS = const(21)          # sample position in the current reading window
CAND_K = const(22)       # last sign change of v: position and the two samples around it
CAND_A = const(23)
CAND_B = const(24)
BOUNDARY = const(25)     # edge of the last half cycle: 1 rising (cycle start), 2 falling, 3 forced
CROSS_K = const(26)      # last confirmed rising crossing: position, sample before, sample after
CROSS_A = const(27)
CROSS_B = const(28)
PREV_N = const(29)       # previous half cycle, for Urms(1/2)
PREV_SVV = const(30)
URMS_SUM = const(31)     # latest Urms(1/2) window: sum of squares and sample count
URMS_N = const(32)
PQ_LOW = const(33)       # Python looks when Urms(1/2)^2 < PQ_LOW or > PQ_HIGH (counts^2)
PQ_HIGH = const(34)
PQ_ACTIVE = const(35)    # 1 while an event is in progress: Python looks every half cycle
CLOCK_HI = const(36)     # samples since start = CLOCK_HI * 2**20 + CLOCK_LO
CLOCK_LO = const(37)
HALVES = const(38)       # half cycles in the current 10/12-cycle window
HALVES_PER_WINDOW = const(39)
INTERVAL = const(40)     # samples per reading window
NORMAL_HALF = const(41)  # forced close after this many samples following a real crossing
FORCED_HALF = const(42)  # ... and after this many following a forced close
SYNCED = const(43)       # rising edges seen, up to 2 (readings start at the second)
ATTN = const(44)         # why run() returned early: bit flags below
UNITS = const(45)        # raw energy units per mWh
IMP_REM = const(46)      # import energy: raw remainder (< UNITS) and whole mWh not yet folded
IMP_MWH = const(47)
EXP_REM = const(48)
EXP_MWH = const(49)
CYCLES = const(50)       # --- per-reading frequency data (EXT_SIZE slots) ---
FIRST_K = const(51)      # first rising crossing of the reading: position, sample before, after
FIRST_A = const(52)
FIRST_B = const(53)
LAST_K = const(54)
LAST_A = const(55)
LAST_B = const(56)
HAVE_FIRST = const(57)
FORCED = const(58)       # half cycles closed without a zero crossing
FROZEN = const(59)       # a forced half cycle ended the run of cycles used for frequency
EXT = CYCLES
EXT_SIZE = const(10)
READING = const(60)      # reading window sums: FIELDS wide values (hi, lo)
WINDOW = READING + 2 * FIELDS  # 10/12-cycle window sums
PH = const(104)          # reference phase of the fundamental, 2**PHASE_BITS per cycle
INC = const(105)         # its step per sample (Meter locks it to the measured frequency)
TAB = const(106)         # cosine table: TAB_SIZE entries, TAB_ONE * cos + TAB_BIAS (kept > 0)
SLOTS = TAB + 1025        # TAB_SIZE + 1: harmonics.py interpolates to the next entry

PHASE_BITS = const(22)
PHASE_MASK = const(0x3FFFFF)
TAB_SIZE = const(1024)
TAB_SHIFT = const(12)    # PHASE_BITS - log2(TAB_SIZE)
TAB_QUARTER = const(256)
TAB_ONE = const(2047)    # Q11: |v * cos| * MAX_HALF_SAMPLES stays < 2**30
TAB_BIAS = const(4096)

RISING = const(1)
FALLING = const(2)
FORCED_EDGE = const(3)

ATTN_PQ = const(1)
ATTN_WINDOW = const(2)
ATTN_READING = const(4)
ATTN_SYNC = const(8)


@micropython.viper
def run(st: ptr32, vb: ptr16, ib: ptr16, k: int, n: int) -> int:
    """Consume samples vb[k:n], ib[k:n]. Returns the next k: n, or earlier with st[ATTN] set."""
    m = 1
    m = m << 31  # as a machine word: a literal 1 << 31 is a big-int object on 32-bit ports
    mask = (m << 1) - 1
    voff = int(st[VOFF])
    ioff = int(st[IOFF])
    ca = ((int(st[COEF_A]) & mask) ^ m) - m
    cb = ((int(st[COEF_B]) & mask) ^ m) - m
    hyst = int(st[HYST])
    minh = int(st[MIN_HALF])
    maxh = int(st[MAX_HALF])
    sgn = 1 - 2 * int(st[POLARITY])
    vp = ((int(st[VPREV]) & mask) ^ m) - m
    ip = ((int(st[IPREV]) & mask) ^ m) - m
    cnt = int(st[N])
    sv = ((int(st[SV]) & mask) ^ m) - m
    svv = int(st[SVV])
    si = ((int(st[SI]) & mask) ^ m) - m
    sii = int(st[SII])
    sp = ((int(st[SP]) & mask) ^ m) - m
    sq = ((int(st[SQ]) & mask) ^ m) - m
    fvc = ((int(st[FVC]) & mask) ^ m) - m
    fvs = ((int(st[FVS]) & mask) ^ m) - m
    fic = ((int(st[FIC]) & mask) ^ m) - m
    fis = ((int(st[FIS]) & mask) ^ m) - m
    ph = int(st[PH])
    inc = int(st[INC])
    base = int(st[POS]) - k  # position = base + k, half-cycle samples = k - start
    start = k - cnt
    kmin = start + minh
    kmax = start + maxh
    cand_k = int(st[CAND_K])
    cand_a = ((int(st[CAND_A]) & mask) ^ m) - m
    cand_b = ((int(st[CAND_B]) & mask) ^ m) - m
    rnd = 1 << 13
    attn = 0
    while k < n:
        v = int(vb[k]) - voff
        i = int(ib[k]) - ioff
        k += 1
        vs = (ca * v + cb * vp + rnd) >> 14
        sv += v
        svv += v * v
        si += ip
        sii += ip * ip
        sp += vs * ip
        sq += vp * i
        # the fundamental: one DFT bin at the reference frequency (table lookups, 4 MACs)
        ph = (ph + inc) & PHASE_MASK
        j = ph >> TAB_SHIFT
        c = int(st[TAB + j]) - TAB_BIAS
        s = int(st[TAB + ((j - TAB_QUARTER) & (TAB_SIZE - 1))]) - TAB_BIAS
        fvc += v * c
        fvs += v * s
        fic += i * c
        fis += i * s
        # x > 0 once v has crossed zero in the direction awaited (sgn: +1 rising, -1 falling);
        # that happens for a few samples per half cycle, so the common path is one compare.
        x = v * sgn
        if x <= 0 and k < kmax:
            vp = v
            ip = i
            continue
        edge = 0
        if x > 0:
            if vp * sgn <= 0:
                cand_k = base + k
                cand_a = vp
                cand_b = v
            if x > hyst and k >= kmin:
                edge = 1 if sgn > 0 else 2
                sgn = 0 - sgn
        vp = v
        ip = i
        if edge == 0:
            if k < kmax:
                continue
            edge = 3
        # ---- a half cycle ended: bookkeeping in machine ints ----
        cnt = k - start
        pos = base + k
        lo = int(st[CLOCK_LO]) + cnt
        if lo >= (1 << 20):
            lo -= 1 << 20
            st[CLOCK_HI] = int(st[CLOCK_HI]) + 1
        st[CLOCK_LO] = lo
        units = int(st[UNITS])
        if sp >= 0:
            r = int(st[IMP_REM]) + sp
            if r >= units:
                q = r // units
                r -= q * units
                st[IMP_MWH] = int(st[IMP_MWH]) + q
            st[IMP_REM] = r
        else:
            r = int(st[EXP_REM]) - sp
            if r >= units:
                q = r // units
                r -= q * units
                st[EXP_MWH] = int(st[EXP_MWH]) + q
            st[EXP_REM] = r
        pn = int(st[PREV_N])
        if pn > 0:
            nn = pn + cnt
            ss = int(st[PREV_SVV]) + svv
            st[URMS_SUM] = ss
            st[URMS_N] = nn
            if int(st[PQ_ACTIVE]) or ss < int(st[PQ_LOW]) * nn or ss > int(st[PQ_HIGH]) * nn:
                attn = 1
        st[PREV_N] = cnt
        st[PREV_SVV] = svv
        st[N] = cnt
        st[SV] = sv
        st[SVV] = svv
        st[SI] = si
        st[SII] = sii
        st[SP] = sp
        st[SQ] = sq
        st[FVC] = fvc
        st[FVS] = fvs
        st[FIC] = fic
        st[FIS] = fis
        j = 0
        while j < FIELDS:  # add the half's sums into the reading and window wide sums
            x = ((int(st[N + j]) & mask) ^ m) - m
            h = READING + 2 * j
            lo = int(st[h + 1]) + x
            st[h] = (((int(st[h]) & mask) ^ m) - m) + (lo >> 20)
            st[h + 1] = lo & 0xFFFFF
            h += 2 * FIELDS
            lo = int(st[h + 1]) + x
            st[h] = (((int(st[h]) & mask) ^ m) - m) + (lo >> 20)
            st[h + 1] = lo & 0xFFFFF
            j += 1
        start = k
        sv = 0
        svv = 0
        si = 0
        sii = 0
        sp = 0
        sq = 0
        fvc = 0
        fvs = 0
        fic = 0
        fis = 0
        if edge == 3:
            maxh = int(st[FORCED_HALF])
            st[FORCED] = int(st[FORCED]) + 1
            if int(st[CYCLES]):
                st[FROZEN] = 1
            else:
                st[HAVE_FIRST] = 0
        else:
            maxh = int(st[NORMAL_HALF])
        kmin = k + minh
        kmax = k + maxh
        if edge == 1:
            st[CROSS_K] = cand_k
            st[CROSS_A] = cand_a
            st[CROSS_B] = cand_b
            if int(st[SYNCED]) < 2:
                attn |= 8
            elif int(st[HAVE_FIRST]) == 0:
                st[HAVE_FIRST] = 1
                st[FIRST_K] = cand_k
                st[FIRST_A] = cand_a
                st[FIRST_B] = cand_b
            elif int(st[FROZEN]) == 0:
                st[CYCLES] = int(st[CYCLES]) + 1
                st[LAST_K] = cand_k
                st[LAST_A] = cand_a
                st[LAST_B] = cand_b
        st[HALVES] = int(st[HALVES]) + 1
        if edge != 2:
            if int(st[HALVES]) >= int(st[HALVES_PER_WINDOW]):
                attn |= 2
            if pos >= int(st[INTERVAL]):
                attn |= 4
        st[BOUNDARY] = edge
        if attn != 0:
            break
    st[MAX_HALF] = maxh
    st[POLARITY] = 1 if sgn < 0 else 0
    st[VPREV] = vp
    st[IPREV] = ip
    st[N] = k - start
    st[SV] = sv
    st[SVV] = svv
    st[SI] = si
    st[SII] = sii
    st[SP] = sp
    st[SQ] = sq
    st[FVC] = fvc
    st[FVS] = fvs
    st[FIC] = fic
    st[FIS] = fis
    st[PH] = ph
    st[POS] = base + k
    st[CAND_K] = cand_k
    st[CAND_A] = cand_a
    st[CAND_B] = cand_b
    st[ATTN] = attn
    return k


@micropython.viper
def clear(a: ptr32, start: int, stop: int):
    j = start
    while j < stop:
        a[j] = 0
        j += 1


@micropython.viper
def merge(dst: ptr32, src: ptr32, start: int, pairs: int):
    """Add the wide values src[start:start + 2*pairs] into dst[0:2*pairs]."""
    m = 1
    m = m << 31
    mask = (m << 1) - 1
    j = 0
    while j < 2 * pairs:
        lo = int(dst[j + 1]) + int(src[start + j + 1])
        dst[j] = ((((int(dst[j]) & mask) ^ m) - m)
                  + (((int(src[start + j]) & mask) ^ m) - m) + (lo >> 20))
        dst[j + 1] = lo & 0xFFFFF
        j += 2


@micropython.viper
def copy(dst: ptr32, src: ptr32, start: int, count: int):
    """dst[0:count] = src[start:start+count]"""
    j = 0
    while j < count:
        dst[j] = src[start + j]
        j += 1
