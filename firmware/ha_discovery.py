# Home Assistant MQTT discovery for the meter (docs/protocol.md, MQTT transport).
#
# One retained config per sensor on homeassistant/sensor/<id>/<key>/config. Every sensor
# reads the latest reading JSON the meter publishes, retained, on bc/<id>/state, and takes
# its availability from the meter's presence on bc/<id>/presence: every stated presence
# (available, available_restricted, available_off, active) is "online"; "unavailable",
# including the Last Will the broker publishes when the link drops, is "offline".
# Keys are the documented MQTT sensor options (home-assistant.io/integrations/sensor.mqtt).
# The configs are built one at a time, as bytes, so a board never holds all of them.

import json

MANUFACTURER = "backchannel"
MODEL = "backchannel meter"
STATUS_TOPIC = b"homeassistant/status"  # Home Assistant's birth message: "online"

# key, reading field, name, device_class, unit (None: unitless), state_class
SENSORS = (
    ("voltage", "vrms", "Voltage", "voltage", "V", "measurement"),
    ("current", "irms", "Current", "current", "A", "measurement"),
    ("power", "p", "Power", "power", "W", "measurement"),
    ("power_factor", "pf", "Power factor", "power_factor", None, "measurement"),
    ("frequency", "f", "Frequency", "frequency", "Hz", "measurement"),
    ("energy", "import_wh", "Energy", "energy", "Wh", "total_increasing"),
)

AVAILABILITY_TEMPLATE = "{{ 'offline' if value_json.state == 'unavailable' else 'online' }}"


def state_topic(device_id):
    return "bc/%s/state" % device_id


def presence_topic(device_id):
    return "bc/%s/presence" % device_id


def config_topic(device_id, key):
    return "homeassistant/sensor/%s/%s/config" % (device_id, key)


def config(device_id, sensor, model=MODEL):
    """The discovery config (a dict) of one entry of SENSORS."""
    key, field, name, device_class, unit, state_class = sensor
    cfg = {
        "name": name,
        "unique_id": "%s_%s" % (device_id, key),
        "device": {"identifiers": [device_id], "name": device_id,
                   "manufacturer": MANUFACTURER, "model": model},
        "device_class": device_class,
        "state_class": state_class,
        "state_topic": state_topic(device_id),
        "value_template": "{{ value_json.%s }}" % field,
        "availability_topic": presence_topic(device_id),
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    if unit is not None:
        cfg["unit_of_measurement"] = unit
    return cfg


def messages(device_id, model=MODEL):
    """Yield (topic, payload) as bytes for every sensor; publish them retained, QoS 1."""
    for sensor in SENSORS:
        yield (config_topic(device_id, sensor[0]).encode(),
               json.dumps(config(device_id, sensor, model)).encode())
