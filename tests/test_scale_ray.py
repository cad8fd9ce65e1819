"""The Ray executor against a real Ray cluster of two node processes on 127.0.0.1."""

from __future__ import annotations

import threading

import psutil
import pytest

from autoresearch.loop import Loop
from autoresearch.research import Limits
from autoresearch.proposers.search import SearchProposer
from autoresearch.rundir import RunResult
from autoresearch.scale.executors import RayExecutor
from tests.raycluster import LoopbackRayCluster, keep_loopback
from tests.test_loop import wait_for
from tests.test_scale import consistent, no_run_processes_left, overlapping, with_combinations

pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture
def ray_cluster(tmp_path, monkeypatch):
    keep_loopback(monkeypatch)
    # the nodes get a data cache of their own: they prepare the data themselves, and prove it by fingerprint
    cluster = LoopbackRayCluster(cpus_per_node=1, env={"AUTORESEARCH_NODE_DIR": str(tmp_path / "nodes"),
                                                       "AUTORESEARCH_CACHE": str(tmp_path / "node-cache")})
    cluster.start()
    yield cluster
    cluster.stop()


def training_worker(cluster: LoopbackRayCluster, ws) -> psutil.Process | None:
    """A Ray worker whose node is training an experiment (its train.py has written metrics)."""
    for worker in cluster.workers():
        try:
            for child in worker.children(recursive=True):
                if "train.py" in child.cmdline() and any(
                        (ws.runs_dir / r.name / "metrics.jsonl").exists() for r in ws.runs_dir.iterdir()):
                    return worker
        except psutil.Error:
            continue
    return None


def test_ray_executor_runs_on_two_nodes_and_survives_a_killed_worker(make_workspace, ray_cluster, tmp_path):
    ws = make_workspace(budget=4, baseline_runs=1)
    logged: list[str] = []
    executor = RayExecutor(2, ws.settings(), address=ray_cluster.address)
    research = Loop.open(ws.root, log=logged.append, executor=executor)
    failure: list[BaseException] = []

    def loop():
        try:
            research.run(SearchProposer(seed=0), Limits(max_experiments=3))
        except BaseException as e:  # reported by the test thread
            import traceback
            failure.append("".join(traceback.format_exception(e)))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        wait_for(lambda: any("run 0003" in line for line in logged) and training_worker(ray_cluster, ws), timeout=300)
        training_worker(ray_cluster, ws).kill()  # a Ray worker dies mid-run
        thread.join(timeout=600)
    finally:
        executor.close()
    assert not thread.is_alive() and not failure, failure or "\n".join(logged)
    text = "\n".join(logged)
    assert "retrying (attempt 2 of 2)" in text and "WorkerCrashedError" in text, text
    rows = consistent(ws, experiments=with_combinations(ws, 3))  # a stale win may add a combination
    assert {r.workers for r in rows} == {2}
    results = [RunResult.load(ws.runs_dir / r.run_id) for r in rows]
    assert len({r.node for r in results}) == 2 and all("ray-node-" in r.node for r in results)  # both nodes ran runs
    # two workers: some two runs trained at once (which two depends on how fast each node started)
    assert overlapping(ws, rows)
    for row in rows:  # the run folders came back from the nodes
        assert (ws.runs_dir / row.run_id / "train.log").exists() and (ws.runs_dir / row.run_id / "eval.json").exists()
    node_logs = [(ws.runs_dir / r.run_id / "node.log") for r in rows]
    assert any(log.exists() and "[node prepare]" in log.read_text() for log in node_logs)
    assert (tmp_path / "node-cache" / "prepared").is_dir()
    no_run_processes_left(ws)


def test_ray_executor_without_an_address_starts_a_local_cluster_and_stops_it(make_workspace, monkeypatch,
                                                                             tmp_path):
    keep_loopback(monkeypatch)
    marker = f"local-{tmp_path.name}"
    monkeypatch.setenv("AUTORESEARCH_TEST_RAY_LOCAL", marker)  # inherited by the processes Ray starts
    monkeypatch.setenv("AUTORESEARCH_NODE_DIR", str(tmp_path / "nodes"))
    ws = make_workspace(budget=3, baseline_runs=1)
    executor = RayExecutor(1, ws.settings())
    with Loop.open(ws.root, log=lambda _: None, executor=executor) as loop:
        cpus = int(executor.ray.cluster_resources()["CPU"])
        assert executor.request == {"num_cpus": cpus} and executor.threads == cpus  # 1 worker: all the CPUs
        loop.run(SearchProposer(seed=0), Limits(max_experiments=1))
    rows = consistent(ws, experiments=1)
    assert all("ray-node-" in RunResult.load(ws.runs_dir / r.run_id).node for r in rows)

    def ray_processes() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                with open(f"/proc/{proc.pid}/environ", "rb") as f:
                    if f"AUTORESEARCH_TEST_RAY_LOCAL={marker}".encode() in f.read().split(b"\0"):
                        found.append(proc)
            except OSError:
                continue
        return [p for p in found if p.pid != psutil.Process().pid]

    try:
        wait_for(lambda: not ray_processes(), timeout=60)  # the local cluster went with the executor
    finally:
        for proc in ray_processes():
            proc.kill()
