"""mqtt_host naming a cluster's nodes (issue 19, item 3): "a,b:1884,c" is checked by the
config and parsed by the firmware's MQTT session into the nodes it tries in turn, the next
after each failed link (the system test is test_nats_cluster.py)."""

import config
import pytest

from lab import runner

session = runner.import_firmware("mqtt_session")    # umqtt from .venv/mplib
pytestmark = pytest.mark.unit


def test_a_cluster_list_is_parsed_with_each_port_or_the_default():
    assert session.brokers("nats-a.example,10.0.0.2:1884, nats-c", 8883) == [
        ("nats-a.example", 8883), ("10.0.0.2", 1884), ("nats-c", 8883)]
    assert session.brokers("broker.example", 1883) == [("broker.example", 1883)]
    assert session.brokers("fe80::1", 1883) == [("fe80::1", 1883)]     # IPv6: colons are the host


def test_the_session_moves_to_the_next_node_and_wraps():
    s = session.MqttSession(b"m", b"pw", "a,b:1884,c", 1883, None, 10, b"t", b"", None, None)
    seen = [(s.host, s.port)]
    for _ in range(3):
        s.next_broker()
        seen.append((s.host, s.port))
    assert seen == [("a", 1883), ("b", 1884), ("c", 1883), ("a", 1883)]


@pytest.mark.parametrize("value", ["a,,b", "a,b:x", "a:0", "a:70000", "a b", "a,:1883", ","])
def test_a_malformed_node_list_is_refused_with_the_form(value):
    with pytest.raises(config.ConfigError, match="separated by ','"):
        config.validate({"mqtt_host": value})


def test_a_node_list_is_accepted():
    assert config.validate({"mqtt_host": "nats-a,nats-b:1884,10.0.0.3"})["mqtt_host"] == \
        "nats-a,nats-b:1884,10.0.0.3"


def test_a_port_in_other_digits_is_refused_not_a_crash():
    with pytest.raises(config.ConfigError, match="separated by ','"):
        config.validate({"mqtt_host": "a:\u00b2\u00b3"})        # str.isdigit() says yes
