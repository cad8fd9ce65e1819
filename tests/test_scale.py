"""Parallel workers (scale/): the local executor, the shared frontier, dead workers, resuming.

Real runs at tiny size in real git repositories; the Ray executor is in test_scale_ray.py."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime

import psutil
import pytest

from autoresearch import hparams
from autoresearch.errors import SettingsError, WorkspaceError
from autoresearch.ledger import Ledger
from autoresearch.data.prepare import open_prepared
from autoresearch.loop import CANDIDATES, Loop
from autoresearch.research import Limits
from autoresearch.rundir import RunResult
from autoresearch.scale import frontier
from autoresearch.scale.executors import LocalExecutor, make_executor, plan_slots
from autoresearch.scale.job import REFUSED, Job
from autoresearch.scale.node import execute
from tests.test_loop import (
    GOOD_LRS,
    SLOW_LRS,
    Scripted,
    commit_train,
    insert_before_setup,
    run_cli,
    set_values,
    wait_for,
)
from tests.test_loop import consistent as single_loop_consistent


def with_combinations(ws, proposals: int) -> int:
    """The experiment rows `proposals` proposals make: one each, and one more per stale win, whose
    change runs again on the new best as `combine: ...` (scale/frontier.py). Whether a win goes
    stale depends on which of two parallel runs finishes first."""
    return proposals + sum(r.description.startswith("combine: ") for r in Ledger.open(ws.ledger_path).rows)


def consistent(ws, experiments: int) -> list:
    """What the single loop's test checks (ledger, branch head, run records agree), and: nothing is
    left under way, and exactly the kept commits are on the branch. Returns the rows."""
    rows = single_loop_consistent(ws, experiments)
    assert json.loads((ws.state_dir / "flights.json").read_text()) == []
    branch = ws.git.run("rev-list", "HEAD").splitlines()
    for row in rows:
        on_branch = any(c.startswith(row.commit) for c in branch)
        if row.status == "keep":
            assert on_branch, row
        elif row.kind == "experiment" and row.run_id:
            assert not on_branch, row
    return rows


def run_loop(ws, proposer, workers: int, max_experiments: int) -> list[str]:
    """The loop in this process on the local executor (one worker: in this process); what it logged."""
    logged: list[str] = []
    with Loop.open(ws.root, log=logged.append, workers=workers) as loop:
        loop.run(proposer, Limits(max_experiments=max_experiments))
    return logged


def overlapping(ws, rows) -> bool:
    """Some two runs were training at the same time (by the runner's start and end stamps)."""
    spans = []
    for row in rows:
        result = RunResult.load(ws.runs_dir / row.run_id)
        spans.append((datetime.fromisoformat(result.started), datetime.fromisoformat(result.ended)))
    return any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


def no_run_processes_left(ws) -> None:
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        assert not env.get("AUTORESEARCH_RUN_ID", "").startswith(str(ws.runs_dir.resolve())), proc


@pytest.mark.slow
def test_two_local_workers_run_concurrently_with_ledger_and_branch_consistent(make_workspace):
    ws = make_workspace(budget=3, baseline_runs=1)
    loop = run_cli(ws, "loop", "--workers", "2", "--executor", "local", "--max-experiments", "4")
    out, _ = loop.communicate(timeout=400)
    assert loop.returncode == 0, out
    expected_rows = with_combinations(ws, 4)
    rows = consistent(ws, experiments=expected_rows)
    baseline = [r for r in rows if r.kind == "baseline"]
    assert len(baseline) == 2 and overlapping(ws, baseline)  # the noise is measured two at a time
    assert overlapping(ws, [r for r in rows if r.kind != "baseline"])
    assert {r.workers for r in rows} == {2}
    experiments = [r.description for r in rows if r.kind == "experiment" and not r.description.startswith("combine")]
    assert len(set(experiments)) == len(experiments)  # the search asked for distinct points while others ran
    for row in rows:
        if row.kind == "experiment":
            record = json.loads((ws.runs_dir / row.run_id / "proposal.json").read_text())
            assert record["description"] == row.description and record["proposer"] == "search"
            assert (ws.runs_dir / row.run_id / "diff.patch").read_text().startswith("diff --git")
    refs = ws.git.run("for-each-ref", "--format=%(refname)", CANDIDATES).splitlines()
    assert len(refs) == expected_rows  # every candidate commit kept reachable
    assert "(2 at a time)" in out
    no_run_processes_left(ws)
    status = run_cli(ws, "status")
    text, _ = status.communicate(timeout=60)
    assert "measured with 2 runs at a time" in text


@pytest.mark.slow
def test_a_stale_win_is_combined_onto_the_new_best(make_workspace):
    ws = make_workspace(budget=3, baseline_runs=1)
    # Two learning rates 100x too small, each a gain of ~0.2 bpb when restored alone (~2.44 -> ~2.23
    # at 3 s). Not the output head's: while it learns 100x too slowly nothing else helps.
    slow = hparams.rewrite(ws.train_py.read_text(), {k: SLOW_LRS[k] for k in ("EMBEDDING_LR", "MATRIX_LR")})
    commit_train(ws, slow, "two learning rates 100x too small")
    matrix = {"MATRIX_LR": GOOD_LRS["MATRIX_LR"]}
    embeddings = {"EMBEDDING_LR": GOOD_LRS["EMBEDDING_LR"]}
    in_flight: list[tuple[str, ...]] = []

    def seeing(edit):  # what the proposer is told is under way when it proposes
        return lambda ctx: (in_flight.append(ctx.in_flight), edit(ctx))

    proposer = Scripted([("restore MATRIX_LR", seeing(set_values(matrix))),
                         ("restore the embedding learning rate", seeing(set_values(embeddings)))])
    # both proposals start from the same best, run side by side; the first to win moves the best
    logged = run_loop(ws, proposer, workers=2, max_experiments=2)
    rows = Ledger.open(ws.ledger_path).rows
    experiments = [r for r in rows if r.kind == "experiment"]
    # one row per run: a candidate whose gain was borderline has a confirmation run's row as well
    candidates = [r for i, r in enumerate(experiments) if r.commit not in {e.commit for e in experiments[:i]}]
    assert len(candidates) == 3  # the two proposals and the combination
    first, second = candidates[:2]
    assert first.status == "keep", "\n".join(logged)
    assert second.status == "discard" and second.rule == "stale", "\n".join(logged)
    assert second.gain > 0 and f"the best moved to {first.commit}" in second.reason
    combined = [r for r in rows if r.description.startswith("combine: ")]
    assert len({r.commit for r in combined}) == 1 and combined[0].parent == first.commit
    assert combined[0].description == f"combine: {second.description}"
    # the combination is the stale change on the new best: every learning rate restored
    values = hparams.read_block(ws.git.show(combined[0].commit, "train.py").decode())
    assert {k: values[k].value for k in GOOD_LRS} == GOOD_LRS
    assert any("runs next" in line for line in logged)
    assert in_flight == [(), ("restore MATRIX_LR",)]  # the second proposal knew what the first worker runs
    consistent(ws, experiments=len(experiments))


def test_frontier_merges_hyperparameters_by_name_and_code_by_lines(make_workspace):
    ws = make_workspace()
    base = ws.train_py.read_text()
    ours = hparams.rewrite(base, {"EMBEDDING_LR": 0.5})
    theirs = hparams.rewrite(base, {"UNEMBEDDING_LR": 0.005, "MATRIX_LR": 0.05})  # adjacent lines
    merged = frontier.merge(base, ours, theirs)
    assert merged == hparams.rewrite(ours, {"UNEMBEDDING_LR": 0.005, "MATRIX_LR": 0.05})
    # the same name changed both ways: a conflict, back to the proposer
    assert frontier.merge(base, hparams.rewrite(base, {"MATRIX_LR": 0.03}), theirs) is None
    # code changes far apart merge by lines; the same line changed differently conflicts
    code = base.replace("t_start = time.time()", "t_start = time.time()  # clock", 1)
    assert "# clock" in frontier.merge(base, ours, code) and "EMBEDDING_LR = 0.5" in frontier.merge(base, ours, code)
    other = base.replace("t_start = time.time()", "t_start = time.perf_counter()", 1)
    assert frontier.merge(base, other, code) is None


def test_local_slots_split_cores_or_refuse_clearly():
    cores = sorted(os.sched_getaffinity(0))
    slots = plan_slots(len(cores), device="cpu")
    assert [s.cores for s in slots] == [[c] for c in cores] and all(s.threads == 1 for s in slots)
    assert plan_slots(1, device="cpu")[0].threads == len(cores)
    with pytest.raises(SettingsError, match="needs at least"):
        plan_slots(len(cores) + 1, device="cpu")
    with pytest.raises(SettingsError, match="one training run at a time"):
        plan_slots(2, device="mps")
    with pytest.raises(SettingsError, match="1 or more"):
        plan_slots(0, device="cpu")



def test_executor_options_that_do_not_go_together_are_refused(make_workspace):
    ws = make_workspace()
    for address, cpus in (("127.0.0.1:6379", None), (None, 2)):
        with pytest.raises(SettingsError, match="go with --executor ray"):
            make_executor("local", ws, ws.settings(), 2, address, cpus)
    with pytest.raises(SettingsError, match="unknown executor 'slurm'"):
        make_executor("slurm", ws, ws.settings(), 2)


def test_a_node_refuses_a_job_whose_data_fingerprint_differs(make_workspace, tmp_path):
    ws = make_workspace()
    settings = ws.settings()
    data_sha256 = open_prepared(settings).data_sha256
    commit = ws.git.head()
    files = {p: b.decode() for p, b in ws.git.tracked_files(commit).items()}
    job = Job(run_id="0001", commit=commit, files=files, settings_sha256=settings.sha256(),
              data_sha256="0" * 64, version="0.1.0", node_root=str(tmp_path / "nodes"))
    answer = execute(job)
    assert answer.status == REFUSED
    assert "data fingerprint" in answer.error and "000000000000" in answer.error and "leave this node out" in answer.error
    answer = execute(Job(**{**job.__dict__, "data_sha256": data_sha256, "version": "9.9"}))
    assert answer.status == REFUSED and "install the same version" in answer.error
    tampered = {**files, "prepare.py": files["prepare.py"] + "\n# edited\n"}
    answer = execute(Job(**{**job.__dict__, "data_sha256": data_sha256, "files": tampered}))
    assert answer.status == REFUSED and "prepare.py" in answer.error


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_a_killed_coordinator_resumes(make_workspace):
    ws = make_workspace(budget=4, baseline_runs=1)
    loop = run_cli(ws, "loop", "--workers", "2", "--max-experiments", "3", start_new_session=True)

    def experiment_nodes():
        flights = ws.state_dir / "flights.json"
        if not flights.exists():
            return []
        runs = [r for p in json.loads(flights.read_text()) if p["kind"] == "experiment" for r in p["runs"]]
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if "autoresearch.scale.node" not in " ".join(proc.info["cmdline"] or []):
                continue
            try:
                key = proc.environ().get("AUTORESEARCH_RUN_ID", "")
            except psutil.Error:
                continue
            if any(key == str((ws.runs_dir / r).resolve()) and (ws.runs_dir / r / "metrics.jsonl").exists()
                   for r in runs):
                found.append(proc)
        return found

    wait_for(lambda: experiment_nodes(), timeout=240)
    victim = experiment_nodes()[0]
    run_id = os.path.basename(victim.environ()["AUTORESEARCH_RUN_ID"])
    victim.send_signal(signal.SIGKILL)  # a worker dies mid-run
    retry = ws.state_dir / "nodes" / f"run{run_id}-2.out"
    wait_for(lambda: retry.exists() and (ws.runs_dir / run_id / "metrics.jsonl").exists(), timeout=120)
    os.killpg(loop.pid, signal.SIGKILL)  # then the coordinator dies too
    first_out, _ = loop.communicate(timeout=60)
    again = run_cli(ws, "loop", "--workers", "2", "--max-experiments", "3")
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, first_out + out
    assert "retrying (attempt 2 of 2)" in first_out, first_out
    assert "recovering: resuming experiment" in out, out
    rows = Ledger.open(ws.ledger_path).rows
    experiments = [r for r in rows if r.kind == "experiment"]
    assert len(experiments) >= 3  # what was under way when the coordinator died counts toward the 3
    consistent(ws, experiments=len(experiments))
    no_run_processes_left(ws)


@pytest.mark.slow  # a node process of its own
def test_a_refusing_node_stops_the_loop_with_its_reason_and_loses_nothing(make_workspace):
    ws = make_workspace(budget=3, baseline_runs=1)
    with Loop.open(ws.root, log=lambda _: None, executor=LocalExecutor(ws, 1)) as loop:
        real = loop.prepared
        # the loop's data differ from what the nodes prepare (as on a machine with other data)
        loop.prepared = type(real)(real.directory, {**real.manifest, "data_sha256": "f" * 64})
        with pytest.raises(WorkspaceError, match="data fingerprint .* but the coordinator's is ffffffffffff"):
            loop.run(Scripted([]), Limits(max_experiments=1))
    assert not ws.ledger_path.exists()  # nothing was recorded as a result...
    flights = json.loads((ws.state_dir / "flights.json").read_text())
    assert [p["kind"] for p in flights] == ["baseline"]  # ...and the baseline is still to be run on resume


@pytest.mark.slow
def test_a_run_that_reaches_into_the_coordinators_workspace_is_flagged_and_undone(make_workspace):
    ws = make_workspace(budget=3, baseline_runs=1)
    fixed = (ws.root / "prepare.py").read_text()
    # the node's workspace is <workspace>/.autoresearch/nodes/<run>/: three levels below the coordinator's
    reach = ("import pathlib; _root = pathlib.Path.cwd().parents[2]; "
             "(_root / 'prepare.py').write_text('EVIL = 1\\n'); (_root / 'results.tsv').write_text('forged\\n')")
    proposer = Scripted([("reach out", insert_before_setup(reach))])
    logged = run_loop(ws, proposer, workers=1, max_experiments=1)
    assert (ws.root / "prepare.py").read_text() == fixed
    rows = Ledger.open(ws.ledger_path).rows  # the forged ledger was rewritten from the coordinator's rows
    assert [r.kind for r in rows] == ["baseline", "experiment"]
    assert "loop's workspace changed while this run was under way: prepare.py" in rows[1].flags
    assert "results.tsv" in rows[1].flags and any("warning: prepare.py" in line for line in logged)


def test_an_interrupted_parallel_loop_is_not_resumed_as_a_single_one(make_workspace, monkeypatch, capsys):
    from autoresearch.cli import main

    ws = make_workspace()
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    (ws.state_dir / "flights.json").write_text(json.dumps([{"phase": "queued", "parent": ws.git.head(),
                                                              "kind": "baseline", "proposer": "baseline",
                                                              "workers": 2}]))
    monkeypatch.chdir(ws.root)
    assert main(["loop", "--max-experiments", "1"]) == 1
    assert "resume it with `autoresearch loop --workers 2`" in capsys.readouterr().err
    assert not ws.ledger_path.exists()
