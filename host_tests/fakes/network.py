# Fake `network` for desktop tests: WLAN records active(), config() and connect() in order.

STA_IF = 0
AP_IF = 1


class WLAN:
    PM_NONE = 0
    PM_PERFORMANCE = 10555712  # 0xA11140 on the Pico W
    PM_POWERSAVE = 2
    instances = []

    def __init__(self, interface=STA_IF):
        self.interface = interface
        self.calls = []
        self.settings = {}
        self._active = False
        self._connected = False
        WLAN.instances.append(self)

    def active(self, v=None):
        if v is None:
            return self._active
        self.calls.append(("active", bool(v)))
        self._active = bool(v)

    def config(self, *args, **kw):
        if args:
            return self.settings.get(args[0])
        if not self._active:
            raise OSError("config() needs active(True) first")
        self.calls.append(("config", kw))
        self.settings.update(kw)

    def connect(self, ssid, key=None):
        self.calls.append(("connect", ssid))
        self._connected = True

    def isconnected(self):
        return self._connected

    def status(self, *args):
        return 3 if self._connected else 0
