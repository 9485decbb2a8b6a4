# Fake `esp32` module for desktop tests (the ESP32 port's own module). boards/esp32_board.py does
# not need it today; it exists so code that imports esp32 for diagnostics runs on the desktop,
# and its Partition (below) backs the tests of boards/esp32_ota.py.


def mcu_temperature():
    return 40


def idf_heap_info(caps):
    return [(100000, 80000, 60000, 75000)]


HEAP_DATA = 4
HEAP_EXEC = 1


# ---- Partition: a simulated flash partition table (esp32.Partition of the ESP32 port) ----
# Each partition is a bytearray with NOR flash semantics: writeblocks(n, buf) erases whole
# 4096-byte blocks to 0xFF then writes; writing with an offset can only clear bits. set_boot
# checks the ESP image magic byte (0xE9) as esp_ota_set_boot_partition validates the image.
# Tests rebuild the table with partition_table() and inspect FLASH / STATE.

BLOCK_SIZE = 4096
ESP_ERR_NOT_SUPPORTED = 0x106
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ENOENT = 2

FLASH = {}    # label -> bytearray
STATE = {}


def partition_table(app_partitions=(("ota_0", 16), ("ota_1", 16)), running="ota_0",
                    rollback=True):
    """Rebuild the table: app partitions as (label, blocks), in flash order."""
    FLASH.clear()
    STATE.clear()
    STATE.update({"apps": [label for label, _ in app_partitions], "running": running,
                  "boot": running, "rollback": rollback, "marked_valid": 0, "set_boot": [],
                  "erases": 0})
    for label, blocks in app_partitions:
        FLASH[label] = bytearray(b"\xff" * (blocks * BLOCK_SIZE))


def corrupt(label, offset):
    FLASH[label][offset] ^= 0x01


partition_table()


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=BLOCK_SIZE):
        if id == Partition.RUNNING:
            label = STATE["running"]
        elif id == Partition.BOOT:
            label = STATE["boot"]
        elif isinstance(id, str):
            label = id
        else:
            raise ValueError()
        if label not in FLASH:
            raise OSError(ENOENT)
        self.label = label

    def info(self):
        ota = self.label.startswith("ota_")
        subtype = 0x10 + int(self.label[4:]) if ota else 0
        address = 0x10000 + sum(len(FLASH[x]) for x in STATE["apps"][:STATE["apps"].index(
            self.label)])
        return (Partition.TYPE_APP, subtype, address, len(FLASH[self.label]), self.label, False)

    def _span(self, block_num, buf, offset):
        start = block_num * BLOCK_SIZE + offset
        if start < 0 or start + len(buf) > len(FLASH[self.label]):
            raise OSError(-0x102)  # ESP_ERR_INVALID_ARG: outside the partition
        return start

    def readblocks(self, block_num, buf, offset=0):
        start = self._span(block_num, buf, offset)
        buf[:] = FLASH[self.label][start:start + len(buf)]

    def writeblocks(self, block_num, buf, offset=None):
        flash = FLASH[self.label]
        start = self._span(block_num, buf, offset or 0)
        data = bytes(buf)
        if offset is None:
            if len(data) % BLOCK_SIZE:
                raise OSError(-0x102)  # esp_partition_erase_range needs whole blocks
            flash[start:start + len(data)] = b"\xff" * len(data)
            STATE["erases"] += len(data) // BLOCK_SIZE
        for i in range(len(data)):
            flash[start + i] &= data[i]

    def ioctl(self, cmd, arg):
        if cmd == 4:
            return len(FLASH[self.label]) // BLOCK_SIZE
        if cmd == 5:
            return BLOCK_SIZE
        if cmd == 6:
            self.writeblocks(arg, b"\xff" * BLOCK_SIZE)
            return 0
        return 0 if cmd in (1, 2, 3) else None

    def set_boot(self):
        if FLASH[self.label][0] != 0xE9:
            raise OSError(-ESP_ERR_OTA_VALIDATE_FAILED)
        STATE["boot"] = self.label
        STATE["set_boot"].append(self.label)

    def get_next_update(self):
        ota = [x for x in STATE["apps"] if x.startswith("ota_")]
        if not ota:
            raise OSError(ENOENT)
        if self.label not in ota:
            return Partition(ota[0])
        return Partition(ota[(ota.index(self.label) + 1) % len(ota)])

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        if not STATE["rollback"]:
            raise OSError(-261)
        STATE["marked_valid"] += 1
