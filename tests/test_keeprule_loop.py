"""The keep rule end to end at tiny size: simplifications, added code and reformatting.

The baseline trains with every learning rate at zero, so a change that leaves training alone
measures exactly the baseline's val_bpb (same seed, same initial weights, same evaluation): the
gain is 0 and only the rule's treatment of complexity can tell the changes apart.
"""

from __future__ import annotations

import ast

import pytest

from autoresearch import complexity, hparams
from autoresearch.cli import main
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.research import Limits

from .test_loop import GOOD_LRS, Scripted, commit_train, set_values

pytestmark = pytest.mark.slow
FROZEN = {"EMBEDDING_LR": 0.0, "UNEMBEDDING_LR": 0.0, "MATRIX_LR": 0.0, "SCALAR_LR": 0.0}
SETUP = "# --- setup"

UNUSED_HELPER = '''
def cosine_multiplier(progress, floor=0.1):
    """A cosine schedule that nothing calls."""
    if progress < 0.0 or progress > 1.0:
        raise ValueError(f"progress {progress} outside [0, 1]")
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


'''

DEAD_BLOCK = '''
class ParameterAudit:
    """Counts parameters by kind; the numbers are never used."""

    def __init__(self, model):
        self.model = model
        self.by_kind = {}

    def collect(self):
        for name, p in self.model.named_parameters():
            kind = "matrix" if p.ndim == 2 else "vector"
            self.by_kind[kind] = self.by_kind.get(kind, 0) + p.numel()
        return self.by_kind

    def share(self, kind):
        total = sum(self.by_kind.values())
        return self.by_kind.get(kind, 0) / max(total, 1)


'''


def insert_before_setup(source: str, code: str) -> str:
    return source.replace(SETUP, code + SETUP, 1)


def reformat(source: str) -> str:
    """The same program written differently: no comments or docstrings, other line breaks, quotes, spacing."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def with_comments(source: str) -> str:
    notes = "# Learning rates restored to the reference's values.\n# (A long note, free of charge.)\n" * 10
    return source.replace("t_start = time.time()", notes + "t_start = time.time()", 1)


def test_simplifications_are_kept_dead_code_is_discarded_and_formatting_is_free(make_workspace, capsys,
                                                                                  monkeypatch):
    ws = make_workspace(budget=2, baseline_runs=1)
    base = insert_before_setup(hparams.rewrite(ws.train_py.read_text(), FROZEN), UNUSED_HELPER)
    commit_train(ws, base, "frozen baseline with an unused helper")
    base_nodes = complexity.measure(base)
    proposer = Scripted([
        ("delete the unused cosine helper", lambda ctx: ctx.ws.train_py.write_text(
            ctx.best_source.replace(UNUSED_HELPER, "\n\n", 1))),
        ("add a parameter audit that nothing uses", lambda ctx: ctx.ws.train_py.write_text(
            insert_before_setup(ctx.best_source, DEAD_BLOCK))),
        ("reformat: no comments, other line breaks", lambda ctx: ctx.ws.train_py.write_text(reformat(ctx.best_source))),
        ("restore the learning rates, with notes", lambda ctx: (
            set_values(GOOD_LRS | {"SCALAR_LR": 0.5})(ctx),
            ctx.ws.train_py.write_text(with_comments(ctx.ws.train_py.read_text())))),
    ])
    with Loop.open(ws.root, tag="rule", log=lambda _: None) as loop:
        assert loop.run(proposer, Limits(max_experiments=4)) == 4
    rows = Ledger.open(ws.ledger_path).rows
    baseline = rows[0]
    assert baseline.kind == "baseline" and baseline.complexity == base_nodes
    by_desc = {r.description: r for r in rows if r.kind == "experiment"}
    assert len(rows) == 5, [(r.kind, r.description, r.why) for r in rows]  # no confirmation runs were needed

    simpler = by_desc["delete the unused cosine helper"]
    assert simpler.val_bpb == baseline.val_bpb, "frozen training should measure the same"
    assert (simpler.status, simpler.rule) == ("keep", "simplification"), simpler.why
    assert simpler.complexity_delta < -30 and simpler.complexity == base_nodes + simpler.complexity_delta
    assert simpler.gain == 0 and simpler.noise == ws.settings().min_noise

    dead = by_desc["add a parameter audit that nothing uses"]
    assert dead.status == "discard" and dead.complexity_delta > 60 and dead.gain == 0, dead.why
    price = ws.settings().complexity_cost * dead.complexity_delta / 100
    assert dead.threshold > price and f"+{dead.complexity_delta} nodes" in dead.reason

    styled = by_desc["reformat: no comments, other line breaks"]
    before = ws.git.show(simpler.commit, "train.py").decode()
    assert len(reformat(before).splitlines()) < len(before.splitlines()) - 50  # far fewer lines...
    assert styled.complexity_delta == 0 and styled.gain == 0
    assert (styled.status, styled.rule) == ("discard", "noise")  # ...but not a simplification

    gain = by_desc["restore the learning rates, with notes"]
    assert (gain.status, gain.rule) == ("keep", "gain") and gain.gain > 0.1  # ...and comments cost nothing
    assert gain.complexity_delta == 0
    assert gain.threshold == pytest.approx(2 * gain.noise * 2 ** 0.5, abs=1e-6)  # the noise alone: no price

    assert ws.git.short() == gain.commit and ws.git.dirty_paths() == []
    log = ws.git.run("log", "--format=%s", "HEAD")
    assert "delete the unused cosine helper" in log and "parameter audit" not in log and "reformat" not in log

    monkeypatch.chdir(ws.root)
    assert main(["status", "--last", "5"]) == 0
    out = capsys.readouterr().out
    assert "simplification" in out and "1 of the kept as simplifications" in out and "syntax-tree nodes" in out
