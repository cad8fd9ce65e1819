"""Experiment trackers with their real libraries, offline, read back with their own readers.

The loop is the real one over a scripted executor (tests/scripted.py: no training), so a research
of twenty runs takes seconds; the trackers are MLflow (its SQLite store, read back through
MlflowClient), TensorBoard (event files, read back with tensorboard's EventAccumulator) and W&B
(offline run folders, read back from the run's transaction log with W&B's own protobufs). They
are in the slow tier: each library takes seconds to import and set up its store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch import hparams, ledger
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.research import Limits
from autoresearch.rundir import read_metrics
from autoresearch.tracking.config import TrackingConfig, from_table
from autoresearch.workspace import TRAIN_FILE
from tests.scripted import ScriptedExecutor, ScriptedProposer

BETTER = {"val": [2.0]}

# 20 runs: the baseline twice, keeps, discards, confirmations, a crash, a timeout, an invalid run,
# and two rows without a run (a failed proposal, a change to another file)
CHANGES = [
    ("clear gain", BETTER),
    ("clear loss", {"val": [3.5]}),
    ("the proposer fails", None),
    ("borderline, confirmed", {"val": [1.99, 1.98]}),
    ("borderline, not confirmed", {"val": [1.975, 1.99]}),
    ("noise", {"val": [1.984]}),
    ("crash", {"outcome": "crash"}),
    ("timeout", {"outcome": "timeout"}),
    ("invalid run", {"outcome": "invalid"}),
    ("touches another file", BETTER),
    *[(f"worse {i}", {"val": [3.0 + i / 10]}) for i in range(8)],
]


@pytest.fixture
def workspace(make_workspace):
    ws = make_workspace("ws", budget=3, control_every=0)  # a fixed number of runs to compare
    ws.state_dir.mkdir(exist_ok=True)
    return ws


def research(ws, track: list[str], changes=CHANGES, logged: list | None = None) -> list[str]:
    """Run the scripted research with live tracking; returns what the loop logged."""
    logged = [] if logged is None else logged
    proposer = ScriptedProposer(list(changes), other_file=("touches another file",))
    with Loop.open(ws.root, tag="t", log=logged.append, executor=ScriptedExecutor(ws), track=track) as loop:
        loop.run(proposer, Limits(max_experiments=sum(script is not None for _, script in changes)))
    return logged


def set_tracking(ws, **values) -> None:
    """Add a [tracking] section to autoresearch.toml and commit it (outside the frozen settings)."""
    path = ws.root / "autoresearch.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text(path.read_text() + "\n[tracking]\n" + "\n".join(lines) + "\n")
    ws.git.run("commit", "-q", "-am", "tracking settings")


def cli(ws, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoresearch", *args], cwd=ws.root, capture_output=True,
                          text=True, timeout=600)


# --- fast: the configuration and the records ---------------------------------------------------


def test_the_tracking_section_is_outside_the_frozen_settings(make_workspace):
    ws = make_workspace()
    before = ws.settings().sha256()
    set_tracking(ws, trackers=["mlflow", "tensorboard"], tensorboard_dir="tb")
    assert ws.settings().sha256() == before and ws.check_fixed_files() == []
    from autoresearch.tracking import config

    assert config.load(ws.root) == TrackingConfig(trackers=("mlflow", "tensorboard"), tensorboard_dir="tb")
    assert config.load(ws.root).with_trackers(["wandb"]).trackers == ("wandb",)


@pytest.mark.parametrize("table, message", [
    ({"trackers": ["comet"]}, "unknown tracker(s) comet"),
    ({"trackers": "mlflow", "tensorboard_dir": 3}, "tensorboard_dir must be a string"),
    ({"tracker": ["mlflow"]}, "unknown key(s) ['tracker']"),
])
def test_a_bad_tracking_section_says_what_is_wrong(table, message):
    from autoresearch.errors import SettingsError

    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        from_table(table)


def test_track_without_a_tracker_names_the_flags(workspace):
    research(workspace, [], changes=CHANGES[:1])
    done = cli(workspace, "track")
    assert done.returncode == 1 and "autoresearch track --mlflow" in done.stderr


def test_records_hold_the_row_the_hyperparameters_and_the_curve(workspace):
    from autoresearch.tracking.record import collect

    research(workspace, [], changes=CHANGES[:5])
    rows = Ledger.open(workspace.ledger_path).rows
    runs = collect(workspace, rows)
    assert [r.key for r in runs if r.row.run_id] == [r.run_id for r in rows if r.run_id]
    confirmed = [r for r in runs if r.row.description.startswith("borderline, confirmed")]
    assert confirmed[1].parent_key == confirmed[0].key and confirmed[0].parent_key == ""
    first = runs[0]
    assert first.branch == "autoresearch/t" and first.experiment == "ws/autoresearch/t"
    assert first.params == {k: hp.value for k, hp in hparams.read_block(workspace.train_py.read_text()).items()}
    assert [s.values["loss"] for s in first.steps] == [m["loss"] for m in read_metrics(first.run_dir)]
    assert first.summary["val_bpb"] == rows[0].val_bpb and first.tags["status"] == "keep"
    gain = next(r for r in runs if r.row.description == "clear gain")
    assert "diff.patch" in gain.files and gain.files[TRAIN_FILE].startswith(
        workspace.git.show(rows[2].commit, TRAIN_FILE).decode()[:100])


def test_a_tracker_whose_library_is_missing_warns_once_and_the_loop_goes_on(workspace, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when not installed
    logged = research(workspace, ["wandb"], changes=CHANGES[:4])
    warnings = [line for line in logged if "warning" in line]
    assert len(warnings) == 1 and "pip install 'autoresearch[wandb]'" in warnings[0], warnings
    described = {r.description.removesuffix(" (confirmation run)") for r in Ledger.open(workspace.ledger_path).rows}
    assert described == {"baseline", *(d for d, _ in CHANGES[:4])}
    assert workspace.git.dirty_paths() == []


# --- MLflow and TensorBoard: live, backfilled, compared ----------------------------------------


def mlflow_content(uri: str, tmp: Path) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out = {}
    for exp in client.search_experiments():
        if exp.name == "Default":
            continue
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        keys = {r.info.run_id: r.data.tags["autoresearch.key"] for r in runs}
        for r in runs:
            tags = r.data.tags
            key = tags["autoresearch.key"]
            folder = tmp / f"{exp.name.replace('/', '_')}-{key}"
            artifacts = {a.path: Path(client.download_artifacts(r.info.run_id, a.path, str(folder))).read_text()
                         for a in client.list_artifacts(r.info.run_id)}
            out[(exp.name, key)] = {
                "name": r.info.run_name, "status": r.info.status, "start": r.info.start_time, "end": r.info.end_time,
                "params": r.data.params, "metrics": r.data.metrics, "artifacts": artifacts,
                "tags": {k: v for k, v in tags.items() if not k.startswith("mlflow.") or k == "mlflow.note.content"},
                "parent": keys.get(tags.get("mlflow.parentRunId", ""), ""),
                "history": {m: [(x.step, x.value, x.timestamp) for x in client.get_metric_history(r.info.run_id, m)]
                            for m in ("loss", "tokens_per_s", "val_bpb") if m in r.data.metrics},
            }
    return out


def tensorboard_content(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = {tag: [(e.step, e.value, round(e.wall_time, 3)) for e in events.Scalars(tag)]
               for tag in events.Tags()["scalars"]}
    hp = {}
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                hp[name] = getattr(value, value.WhichOneof("kind"))
    return {"scalars": scalars, "hparams": hp}


@pytest.mark.slow
def test_mlflow_and_tensorboard_hold_the_research_and_a_backfill_gives_the_same(workspace, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    ws = workspace
    logged = research(ws, ["mlflow", "tensorboard"])
    assert not any("warning" in line for line in logged), [line for line in logged if "warning" in line]
    rows = Ledger.open(ws.ledger_path).rows
    ran = [r for r in rows if r.run_id]
    assert len(ran) == 20 and len(rows) == 22, [(r.run_id, r.kind, r.status) for r in rows]
    assert ws.git.dirty_paths() == []  # mlflow.db and mlruns/ are kept out of git
    live = mlflow_content(f"sqlite:///{ws.root / 'mlflow.db'}", tmp_path / "live")

    # what MLflow holds is the ledger, the run folders and the commits
    assert set(live) == {("ws/autoresearch/t", run.key) for run in _keys(ws, rows)}
    by_run = {key: content for (_, key), content in live.items()}
    for row in ran:
        run = by_run[row.run_id]
        assert run["tags"]["status"] == row.status and run["tags"]["rule"] == row.rule
        assert run["tags"]["commit"] == row.commit and run["tags"]["proposer"] == row.proposer
        if row.val_bpb is not None:
            assert run["metrics"]["val_bpb"] == pytest.approx(row.val_bpb)
        assert run["metrics"]["memory_gb"] == pytest.approx(row.memory_gb)
        source = ws.git.show(row.commit, TRAIN_FILE).decode()
        assert run["params"] == {k: str(hp.value) for k, hp in hparams.read_block(source).items()}
        assert run["artifacts"][TRAIN_FILE] == source
        assert [v for _, v, _ in run["history"]["loss"]] == [m["loss"] for m in read_metrics(ws.runs_dir / row.run_id)]
        assert run["status"] == ("FINISHED" if row.status in ("keep", "discard") else "FAILED")
        if row.kind == "confirm":
            first = next(r for r in ran if r.commit == row.commit and r.kind == "experiment")
            assert run["parent"] == first.run_id
        if row.parent:
            assert run["artifacts"]["diff.patch"] == (ws.runs_dir / row.run_id / "diff.patch").read_text()
    assert by_run[next(r.run_id for r in ran if r.kind == "confirm")]["parent"]
    refused = [c for (_, key), c in live.items() if key.startswith("norun-")]
    assert sorted(c["tags"]["rule"] for c in refused) == ["guard", "proposal-failed"]

    # TensorBoard: event files per run folder, read back with tensorboard's own reader
    first = tensorboard_content(ws.runs_dir / ran[0].run_id / "tb")
    metrics = read_metrics(ws.runs_dir / ran[0].run_id)
    assert [s for s, _, _ in first["scalars"]["train/loss"]] == [m["step"] for m in metrics]
    assert [v for _, v, _ in first["scalars"]["train/loss"]] == pytest.approx([m["loss"] for m in metrics])  # float32
    assert first["scalars"]["result/val_bpb"][0][1] == pytest.approx(ran[0].val_bpb)
    source = ws.git.show(ran[0].commit, TRAIN_FILE).decode()
    assert {k: first["hparams"][k] for k in ("DEPTH", "WINDOW_PATTERN")} == {
        k: hparams.read_block(source)[k].value for k in ("DEPTH", "WINDOW_PATTERN")}
    assert first["hparams"]["status"] == "keep"

    # the backfill of the same workspace into a second store and folder gives the same content
    set_tracking(ws, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'backfill.db'}", tensorboard_dir="tb-backfill")
    done = cli(ws, "track", "--mlflow", "--tensorboard")
    assert done.returncode == 0, done.stderr
    assert "mlflow: 22 run(s) written" in done.stdout and "tensorboard: 20 run(s) written" in done.stdout
    assert mlflow_content(f"sqlite:///{tmp_path / 'backfill.db'}", tmp_path / "backfill") == live
    for row in ran:
        assert tensorboard_content(ws.root / "tb-backfill" / row.run_id) == \
            tensorboard_content(ws.runs_dir / row.run_id / "tb"), row.run_id
    from autoresearch.tracking.backfill import backfill

    again = backfill(ws, ["mlflow", "tensorboard"], log=lambda _: None)  # what a tracker holds is not written twice
    assert [(b.tracker, b.written, b.present) for b in again] == [("mlflow", 0, 22), ("tensorboard", 0, 22)]


def _keys(ws, rows):
    from autoresearch.tracking.record import collect

    return collect(ws, rows)


@pytest.mark.slow
def test_a_tracker_that_cannot_write_warns_once_and_the_loop_goes_on(workspace, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'mlflow.db'}")
    logged = research(workspace, ["mlflow"], changes=CHANGES[:6])
    warnings = [line for line in logged if "mlflow tracking failed" in line]
    assert len(warnings) == 1 and "autoresearch track --mlflow" in warnings[0]
    rows = Ledger.open(workspace.ledger_path).rows
    described = {r.description.removesuffix(" (confirmation run)") for r in rows if r.kind != "baseline"}
    assert described == {d for d, _ in CHANGES[:6]}  # every experiment decided and recorded
    assert ledger.load_row(workspace.runs_dir / rows[-1].run_id) is not None


@pytest.mark.slow
def test_a_missing_library_is_one_warning_with_the_install_command(workspace, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "shadow" / "wandb").mkdir(parents=True)  # a wandb that cannot be imported
    (tmp_path / "shadow" / "wandb" / "__init__.py").write_text("raise ImportError('no wandb here')\n")
    research(workspace, [], changes=CHANGES[:1])
    done = subprocess.run([sys.executable, "-m", "autoresearch", "track", "--wandb"], cwd=workspace.root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "pip install 'autoresearch[wandb]'" in done.stderr


# --- Weights & Biases: offline run folders ------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (run-*.wandb): a LevelDB-style log of 32 KiB blocks
    (7-byte chunk headers: crc32, length, type) after a 7-byte file header, holding Record protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32 * 1024
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            pending = b""
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def values(items) -> dict:
    """The key -> value of W&B's config, history and summary items (JSON values, keys maybe nested)."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@pytest.mark.slow
def test_wandb_offline_runs_hold_the_research(workspace, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    ws = workspace
    logged = research(ws, ["wandb"], changes=CHANGES[:2])
    assert not any("warning" in line for line in logged), [line for line in logged if "warning" in line]
    assert ws.git.dirty_paths() == []
    rows = Ledger.open(ws.ledger_path).rows
    folders = sorted((ws.root / "wandb").glob("offline-run-*"))
    assert len(folders) == len(rows) == 4
    seen = {}
    for folder in folders:
        records = wandb_records(next(folder.glob("run-*.wandb")))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        config = {}
        for r in records:
            if r.WhichOneof("record_type") == "config":
                config.update(values(r.config.update))
        config.update(values(run.config.update))
        history = [values(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
        summary = {}
        for r in records:
            if r.WhichOneof("record_type") == "summary":
                summary.update(values(r.summary.update))
        seen[config["autoresearch_run_id"]] = (run, config, history, summary, folder)
    for row in rows:
        run, config, history, summary, folder = seen[row.run_id]
        assert run.project == "ws" and run.run_group == "autoresearch/t" and run.job_type == row.kind
        assert run.display_name.startswith(row.run_id)
        assert config["DEPTH"] == hparams.read_block(ws.git.show(row.commit, TRAIN_FILE).decode())["DEPTH"].value
        metrics = read_metrics(ws.runs_dir / row.run_id)
        assert [h["loss"] for h in history] == [m["loss"] for m in metrics]
        assert summary["val_bpb"] == pytest.approx(row.val_bpb) and summary["tag/status"] == row.status
        assert (folder / "files" / TRAIN_FILE).read_text() == ws.git.show(row.commit, TRAIN_FILE).decode()
    done = cli(ws, "track", "--wandb")  # the backfill finds every run there already
    assert done.returncode == 0 and "wandb: 0 run(s) written, 4 already there" in done.stdout, done.stderr
