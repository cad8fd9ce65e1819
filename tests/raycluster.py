"""A real two-node Ray cluster on 127.0.0.1 for the tests: a head and a second node process.

Each cluster has its own temporary folder, ports and an environment marker that every process
of it inherits, so it is stopped without `ray stop` (which would end every Ray process of the
user, other tests' clusters included): its processes are found by the marker and killed.

Ray replaces 127.0.0.1 by the machine's primary address (`resolve_ip_for_localhost`); the tests
may use loopback only, so `ray start` runs with that replacement turned off, and so does the
test's driver (`keep_loopback`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

MARK = "AUTORESEARCH_TEST_RAY_CLUSTER"
_LOOPBACK_CLI = ("import sys, ray._private.services as services; services.resolve_ip_for_localhost = lambda h: h; "
                 "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


def keep_loopback(monkeypatch) -> None:
    import ray._private.services as services

    monkeypatch.setattr(services, "resolve_ip_for_localhost", lambda host: host)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackRayCluster:
    def __init__(self, cpus_per_node: int = 1, env: dict[str, str] | None = None) -> None:
        self.marker = uuid.uuid4().hex
        # short: Ray's unix sockets live under it, and socket paths are limited to ~107 bytes
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cpus = cpus_per_node
        self.env = {**os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0", MARK: self.marker}

    def _start(self, *args: str) -> None:
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
                  f"--temp-dir={self.temp_dir}", "--object-store-memory=100000000", "--min-worker-port=0",
                  "--max-worker-port=0", f"--dashboard-agent-listen-port={free_port()}",
                  "--include-log-monitor=false", "--disable-usage-stats"]
        log = os.path.join(self.temp_dir, "ray-start.log")
        with open(log, "a") as out:
            done = subprocess.run([sys.executable, "-c", _LOOPBACK_CLI, "start", *args, *common], env=self.env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{open(log).read()[-3000:]}")

    def start(self) -> LoopbackRayCluster:
        try:
            self._start("--head", f"--port={self.port}", "--include-dashboard=false", f"--dashboard-port={free_port()}")
            self._start(f"--address={self.address}")
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[psutil.Process]:
        """This cluster's live processes: those with its marker or folder, and their descendants."""
        tag, me, found = f"{MARK}={self.marker}".encode(), os.getpid(), []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:  # read raw: Ray's process titles overwrite the block psutil.environ() parses
                with open(f"/proc/{proc.pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if tag in env or f"{self.temp_dir}/" in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        for proc in list(found):
            try:
                found += [c for c in proc.children(recursive=True) if c not in found and c.pid != me]
            except psutil.Error:
                pass
        return found

    def workers(self) -> list[psutil.Process]:
        """Ray worker processes (they run the tasks)."""
        out = []
        for proc in self.processes():
            try:
                if proc.name().startswith("ray::") and not proc.name().endswith("Agent"):  # not the raylet's agents
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def stop(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while procs := self.processes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray processes still running: {[p.pid for p in procs]}")
            for proc in sorted(procs, key=lambda p: p.name() != "raylet" if p.is_running() else True):
                try:
                    proc.kill()  # the raylets first, so that no new workers start
                except psutil.Error:
                    pass
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
