"""A three-node NATS cluster (JetStream, the MQTT gateway) for the tests and the fault
campaign, the way an operator runs it: `backchannel nats-config` writes its files from the
head-end's device registry (free loopback ports), headend/nats_cluster.py runs the nodes.
Pass serve_args() to the Headend, meter_settings() to a Meter; run configure() again after
registering meters (the running nodes reread their users)."""

import os
import subprocess
from pathlib import Path

from headend import nats_cluster
from lab.processes import HEADEND, free_ports

NODES = 3


def missing_reason():
    """Why no cluster can run here (nats-server installed on first use as root), or None."""
    return nats_cluster.ensure_installed()


class NatsSite:
    def __init__(self, workdir, db, db_key=None):
        self.dir = Path(workdir) / "nats"
        self.db = str(db)
        self.db_key = db_key
        kinds = ("client", "cluster", "mqtt", "http")
        ports = free_ports(len(kinds) * NODES)
        self.ports = {kind: ports[i * NODES:(i + 1) * NODES] for i, kind in enumerate(kinds)}
        self.cluster = None

    def configure(self):
        env = dict(os.environ)
        if self.db_key:
            env["BACKCHANNEL_DB_KEY"] = str(self.db_key)
        args = [*HEADEND, "nats-config", "--db", self.db, "--dir", str(self.dir)]
        for kind, ports in self.ports.items():
            args += ["--%s-port" % kind, ",".join(map(str, ports))]
        p = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
        if p.returncode:
            raise RuntimeError("backchannel nats-config: %s" % p.stderr)
        return p.stdout.strip()

    def start(self):
        self.configure()
        self.cluster = nats_cluster.NatsCluster(self.dir).start()
        return self

    def serve_args(self):
        return ["--nats-dir", str(self.dir)]

    def meter_settings(self, keepalive=10, first="node1"):
        """Firmware config keys for a Meter on the cluster: every node, `first` first."""
        names = sorted(self.cluster.nodes, key=lambda n: (n != first, n))
        return {"transport": "mqtt", "mqtt_host": self.cluster.mqtt_host(names),
                "mqtt_tls": False, "mqtt_keepalive": keepalive}

    def mqtt_port(self, name):
        return self.cluster.nodes[name]["mqtt"]

    def kill(self, name):
        self.cluster.kill(name)

    def restart(self, name, timeout=60, server_only=False):
        """Start a killed node again; wait until the cluster is healthy (server_only: until
        each node's JetStream runs, not every consumer is current: nats_cluster.healthy)."""
        self.cluster.start_node(name)
        self.cluster.wait_healthy(timeout, server_only=server_only)

    def stop(self):
        if self.cluster is not None:
            self.cluster.stop()
