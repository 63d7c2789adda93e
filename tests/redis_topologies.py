"""Private Redis topologies for the tests: a Redis Cluster (3 masters, 3 replicas) and a
Sentinel set-up (a master, a replica, 3 sentinels), all on 127.0.0.1, in tmp dirs, no
persistence. Used by the fixtures in tests/conftest.py."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

#: Milliseconds without an answer after which a cluster node (or a sentinel's master) is
#: taken for failed: short, so that failover tests fail over quickly.
NODE_TIMEOUT_MS = 1000


def _free_port(also: int = 0) -> int:
    """A free port on 127.0.0.1 (and `port + also` free too, for a cluster's bus port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not also or port + also >= 65536:
            if not also:
                return port
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + also))
        except OSError:
            continue
        return port


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (needed by the Redis Cluster/Sentinel tests)")
    return found


def cli(port: int, *args: str, timeout: float = 60.0) -> str:
    """`redis-cli -p port args...`, its output (raises on failure)."""
    done = subprocess.run(
        [binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def wait_until(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Node:
    """One `redis-server` process on 127.0.0.1 in a directory of its own."""

    def __init__(
        self,
        root: Path,
        *args: str,
        port: int | None = None,
        bus: bool = False,
        config: Path | None = None,
    ) -> None:
        self.root = root
        self.bus = bus
        # A cluster node's port may move to another free one until it has started once
        # (another process took it first: another pytest-xdist worker's server, another
        # run's); a sentinel set-up's ports are written into the others' settings, so stay.
        self.movable = port is None and bus and config is None
        self.config = config
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self._use_port(port or _free_port(also=10000 if bus else 0))

    def _use_port(self, port: int) -> None:
        self.port = port
        self.dir = self.root / str(self.port)
        self.dir.mkdir()

    def start(self) -> None:
        for _attempt in range(5):
            if self._launch():
                self.movable = False
                return
            if not self.movable:
                break
            self._use_port(_free_port(also=10000 if self.bus else 0))
        raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.dir})")

    def _launch(self) -> bool:
        """Start the server; whether it answers as itself on its port (False: it exited,
        e.g. its port was taken, or it did not answer in 10 s)."""
        command = [binary("redis-server")]
        if self.config is not None:  # a sentinel: its config file first, then --sentinel
            command += [str(self.config), *self.args]
        else:
            command += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            command += ["--appendonly", "no", "--daemonize", "no", *self.args]
        command += ["--logfile", str(self.dir / "log")]
        process = self.process = subprocess.Popen(
            command, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # INFO's process_id, not a PONG: another process's server on a port taken under
        # our feet would answer PING too.
        deadline = time.monotonic() + 10
        while True:
            try:
                info = cli(self.port, "INFO", "server", timeout=2)
                if re.search(rf"^process_id:{process.pid}\s*$", info, re.MULTILINE):
                    return True
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                return False
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop at once (SIGKILL): a crashed server."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Cluster:
    """A Redis Cluster of `masters` masters with one replica each: `.url(prefix=...)`."""

    def __init__(self, masters: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="queueing-cluster-"))
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        options += ("--cluster-node-timeout", str(NODE_TIMEOUT_MS))
        # Replicas sync at once (not after diskless sync's 5 s delay), and may always take
        # over (the default refuses a replica that lost its master "too long" ago).
        options += ("--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0")
        self.nodes = [Node(self.root, *options, bus=True) for _ in range(2 * masters)]
        self.master_count = masters

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            cli(
                self.nodes[0].port,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            )
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says the cluster is ok and agrees on who serves all slots."""

        def healthy() -> bool:
            for node in self.nodes:
                if node.process is None:
                    continue
                if "cluster_state:ok" not in cli(node.port, "CLUSTER", "INFO", timeout=2):
                    return False
                replication = cli(node.port, "INFO", "replication", timeout=2)
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False  # a replica still syncing could not take over
                # Its view names each replica as one (gossip can lag: a replica still
                # listed as a master of no slots was once taken as a reshard's target).
                view = cli(node.port, "CLUSTER", "NODES", timeout=2).splitlines()
                masters = [line for line in view if "master" in line.split()[2]]
                if sum("fail" not in line.split()[2] for line in masters) != self.master_count:
                    return False
            cli(self.live().port, "--cluster", "check", f"127.0.0.1:{self.live().port}")
            return True

        wait_until(healthy, "the cluster to be healthy", timeout)

    def live(self) -> Node:
        return next(node for node in self.nodes if node.process is not None)

    def masters(self) -> list[tuple[str, int, int]]:
        """(node id, port, slots) of each master, as a live node sees them."""
        found = []
        for line in cli(self.live().port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                port = int(fields[1].split(":")[1].split("@")[0])
                slots = 0
                for span in fields[8:]:
                    if span.startswith("["):
                        continue
                    low, _, high = span.partition("-")
                    slots += int(high or low) - int(low) + 1
                found.append((fields[0], port, slots))
        return found

    def owner(self, slot: int) -> tuple[str, int]:
        """(node id, port) of the master that serves `slot`."""
        for line in cli(self.live().port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                if span.startswith("["):
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return fields[0], int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master serves slot {slot}")

    def replica_of(self, master_id: str) -> int:
        """The port of a replica of the master `master_id` (waiting up to 30 s for the
        cluster to show one: on a loaded machine a replica may still be attaching, or be
        flagged failing for a moment)."""
        deadline = time.monotonic() + 30
        while True:
            for line in cli(self.live().port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if fields[3] == master_id and "fail" not in fields[2]:
                    return int(fields[1].split(":")[1].split("@")[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"master {master_id} has no replica")
            time.sleep(0.2)

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def url(self, **options: object) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"redis+cluster://{seeds}" + (f"?{query}" if query else "")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Sentinels:
    """A master, a replica and 3 sentinels watching them as service `name`."""

    def __init__(self, name: str = "queueing") -> None:
        self.name = name
        self.root = Path(tempfile.mkdtemp(prefix="queueing-sentinel-"))
        self.master = Node(self.root, "--repl-diskless-sync-delay", "0")
        self.replica = Node(
            self.root,
            "--replicaof",
            "127.0.0.1",
            str(self.master.port),
            "--repl-diskless-sync-delay",
            "0",
        )
        self.sentinels: list[Node] = []
        for _ in range(3):
            port = _free_port()
            config = self.root / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {name} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {name} 10000\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            self.sentinels.append(Node(self.root, "--sentinel", port=port, config=config))

    def start(self) -> None:
        try:
            self.master.start()
            self.replica.start()
            wait_until(
                lambda: "master_link_status:up" in cli(self.replica.port, "INFO", "replication"),
                "the replica to sync",
            )
            for sentinel in self.sentinels:
                sentinel.start()
            wait_until(
                lambda: all(
                    "num-other-sentinels\n2" in cli(s.port, "SENTINEL", "MASTER", self.name)
                    for s in self.sentinels
                ),
                "the sentinels to find each other",
            )
        except BaseException:
            self.close()
            raise

    def master_port(self) -> int:
        answer = cli(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(answer.split()[1])

    def url(self, **options: object) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"redis+sentinel://{hosts}/{self.name}" + (f"?{query}" if query else "")

    def close(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of(key: str) -> int:
    """The Redis Cluster slot of a key (its hash tag's, if it has one)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start >= 0 and end > start + 1:
        key = key[start + 1 : end]
    return _crc16(key.encode()) % 16384
