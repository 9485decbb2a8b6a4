# Fake `esp32` module for desktop tests (the ESP32 port's own module). boards/esp32.py does not
# need it today; it exists so code that imports esp32 for diagnostics runs on the desktop.


def mcu_temperature():
    return 40


def idf_heap_info(caps):
    return [(100000, 80000, 60000, 75000)]


HEAP_DATA = 4
HEAP_EXEC = 1
