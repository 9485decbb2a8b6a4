# Flash wear of the meter's own writes, measured on LittleFS v2 (MicroPython's VfsLfs2, the
# filesystem of the ESP32 and RP2040 ports) over a RAM block device that counts erases per
# 4 KiB block. Runs under MicroPython (tools/lab/runner.py):
#
#   flash_wear_mp.py BOARD SAVES_PER_DAY READINGS_PER_DAY DAYS [HOLD [ACK]]
#
# BOARD esp32: 2 MiB filesystem (ESP32_GENERIC's vfs partition), progsize 32 (the port's
# default); rp2: 848 KiB (RPI_PICO_W), progsize 256 (its _boot.py). The firmware's files take
# 400 KB (a running and a staged release, as after an update). A simulated day makes
# SAVES_PER_DAY register saves (energy.RegisterStore, two alternating write-then-rename slots,
# as the save policy asks for them) and READINGS_PER_DAY readings
# offered to an outbox.Outbox holding HOLD of them in RAM (default 1: each its own append),
# interleaved evenly. ACK "now" (default): each reading is acked as soon as it is offered (a
# meter in touch with its head-end); "flush": the readings are acked only once they are on
# flash, one ack per append (the head-end polls the meter less often than it saves, or it
# is cut off for a while). Prints one JSON line: erases per day, the blocks free for wear
# levelling, the most-erased block, and the writes the store layer made.

import json
import os
import sys

import vfs
from energy import Registers, RegisterStore
from outbox import Outbox

BOARDS = {"esp32": (2 * 1024 * 1024, 32), "rp2": (848 * 1024, 256)}
BLOCK = 4096


class CountingFlash:
    def __init__(self, size):
        self.count = size // BLOCK
        self.data = bytearray(b"\xff" * size)
        self.erases = [0] * self.count

    def readblocks(self, block, buf, off=0):
        a = block * BLOCK + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, off=0):
        a = block * BLOCK + off
        self.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 5:
            return BLOCK
        if op == 6:
            self.erases[arg] += 1
            self.data[arg * BLOCK:(arg + 1) * BLOCK] = b"\xff" * BLOCK
            return 0
        return 0


def main(board, saves, readings, days, hold=1, ack="now"):
    size, prog = BOARDS[board]
    flash = CountingFlash(size)
    vfs.VfsLfs2.mkfs(flash, progsize=prog)
    vfs.mount(vfs.VfsLfs2(flash, progsize=prog), "/flash")
    os.mkdir("/flash/fw")
    for i in range(100):                          # 400 KB of firmware files
        with open("/flash/fw/m%d.mpy" % i, "wb") as f:
            f.write(bytes(4000))
    os.mkdir("/flash/state")
    regs = Registers(1000)
    energy = RegisterStore("/flash/state/energy")
    outbox = Outbox("/flash/state/outbox", hold=hold)
    body = {"t": 1796553338, "vrms": 230.12, "irms": 6.865, "p": 1500.2, "q": 493.1,
            "s": 1578.9, "pf": 0.95, "f": 50.001, "vmin": 229.9, "vmax": 230.3,
            "imin": 6.8, "imax": 6.9, "pmin": 1490.0, "pmax": 1510.0, "import_wh": 12345.678,
            "export_wh": 0.0, "import_varh": 4321.123, "export_varh": 0.0, "demand_w": 1500.0,
            "unsaved": {"import_wh": 1.234, "export_wh": 0.0, "import_varh": 0.5,
                        "export_varh": 0.0}}
    start = list(flash.erases)
    steps = max(saves, readings)
    for _ in range(days):
        for k in range(steps):
            if k * saves // steps != (k + 1) * saves // steps:
                regs.import_wh.add_mwh(1500)
                energy.save(regs)
            if k * readings // steps != (k + 1) * readings // steps:
                before = outbox.appends
                seq = outbox.offer("reading", body)
                if ack == "now" or outbox.appends != before:
                    outbox.ack(seq)
    erased = [e - s for e, s in zip(flash.erases, start)]
    st = os.statvfs("/flash")
    print(json.dumps({"board": board, "saves_per_day": saves, "readings_per_day": readings,
                      "erases_per_day": sum(erased) / days, "free_blocks": st[3],
                      "blocks": flash.count, "max_block_per_day": max(erased) / days,
                      "hold": hold, "ack": ack, "outbox_appends_per_day": outbox.appends / days}))


main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
     *([int(sys.argv[5])] + sys.argv[6:7] if len(sys.argv) > 5 else []))
