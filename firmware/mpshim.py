# Stand-in for the `micropython` module when firmware runs on CPython (host tests, replay).
# On MicroPython the real module is built in and the decorators compile native code.


def viper(f):
    return f


def native(f):
    return f


def const(x):
    return x
