"""A real Redis Cluster on loopback for tests and benchmarks: six ``redis-server`` processes
(three masters, one replica each) on free ports, created with ``redis-cli --cluster create``."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from devkit.ports import free_cluster_port, real_clock_env
from devkit.waits import wait_for

NODE_TIMEOUT_MS = 1500  # low, so a killed master's replica takes over within a few seconds
NO_RETRY = Retry(NoBackoff(), 0)  # a start-up probe asks once; the loop around it decides



@dataclass
class LocalCluster:
    """Six loopback nodes; ``start()`` returns once ``cluster_state:ok`` on every node."""

    masters: int = 3
    replicas: int = 1
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lscluster-")))
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``REDIS_URL`` naming one node (any node will do)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def env(self) -> dict[str, str]:
        """What a projector or an API process needs to use this cluster."""
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "1"}

    def start(self, timeout_s: float = 30) -> LocalCluster:
        """Start the nodes and create the cluster; on any failure every node started is stopped."""
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                self.ports.append(self._spawn_answering(timeout_s))
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout_s,
                env=real_clock_env(),
            )
            self.wait_ok(timeout_s)
            self.wait_replicas_synced(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_answering(self, timeout_s: float, attempts: int = 5) -> int:
        """A node on a free port, answering PING. The port is free when chosen but may be taken
        (by any process's outgoing connection) before redis-server binds it; then the node exits
        at once and is started again on another port."""
        for _ in range(attempts):
            port = self._free_port_pair()
            self._spawn(port)
            if self._wait_answering(port, timeout_s):
                return port
        raise RuntimeError(f"no cluster node started in {attempts} attempts; last log:\n{self._log_tail(port)}")

    def _free_port_pair(self) -> int:
        taken = {q + d for q in self.procs for d in (0, 10000)}
        while True:
            port = free_cluster_port()
            if port not in taken and port + 10000 not in taken:
                return port

    def _spawn(self, port: int) -> None:
        workdir = self.directory / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(workdir / "nodes.conf"), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--dir", str(workdir), "--logfile", str(workdir / "redis.log"), "--repl-diskless-sync-delay", "0",
             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=real_clock_env(),
        )

    def _log_tail(self, port: int, lines: int = 5) -> str:
        try:
            return "\n".join((self.directory / str(port) / "redis.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_answering(self, port: int, timeout_s: float) -> bool:
        """True once the node answers; False if it exited (its port was taken)."""
        deadline = time.monotonic() + timeout_s
        proc = self.procs[port]
        while True:
            if proc.poll() is not None:
                del self.procs[port]
                return False
            try:
                with redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5, retry=NO_RETRY) as node:
                    node.ping()
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {port} did not answer in {timeout_s} s:\n"
                                       f"{self._log_tail(port)}") from None
                time.sleep(0.05)

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Until every running node reports ``cluster_state:ok`` with all 16384 slots served."""
        wait_for(lambda: all(self._answers(p, lambda node: node.cluster("INFO")["cluster_state"] == "ok")
                             for p in self.running_ports()), timeout_s, "cluster_state:ok on every node")

    def wait_replicas_synced(self, timeout_s: float = 30) -> None:
        """Until every replica has finished its first sync with its master. A replica that never
        synced refuses to take over (its data counts as older than cluster-replica-validity-factor
        allows), so a master killed before then would stay down."""
        def synced(node: redis.Redis) -> bool:
            info = node.info("replication")
            return info["role"] != "slave" or info.get("master_link_status") == "up"

        wait_for(lambda: all(self._answers(p, synced) for p in self.running_ports()), timeout_s,
                 "every replica's first sync with its master")

    @staticmethod
    def _answers(port: int, check) -> bool:
        """``check(node)`` on a fresh connection to one node; False when the node does not answer."""
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True) as node:
                return bool(check(node))
        except redis.RedisError:
            return False

    def running_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """The ports of the nodes that are masters now (by what a running node sees)."""
        with redis.Redis(port=self.running_ports()[0], decode_responses=True) as node:
            lines = node.execute_command("CLUSTER", "NODES").splitlines()
        ports = []
        for line in lines:  # id host:port@bus flags master ping pong epoch link-state slots...
            _, address, flags, *_rest = line.split()
            if "master" in flags.split(",") and "fail" not in flags:
                ports.append(int(address.split(":")[1].split("@")[0]))
        return sorted(ports)

    def client(self, **kwargs) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.ports[0], **kwargs)

    def kill9(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait()

    def restart(self, port: int, timeout_s: float = 30) -> None:
        """Start a node that was killed again, on its port and with its cluster config: once it
        sees that its replica took over, it rejoins as that replica's replica."""
        self._spawn(port)
        if not self._wait_answering(port, timeout_s):
            raise RuntimeError(f"cluster node {port} did not restart:\n{self._log_tail(port)}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
