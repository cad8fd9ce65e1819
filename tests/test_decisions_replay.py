"""The decision-quality benchmark's replay (bench/decisions_replay.py) on run sets whose right
answers are known, its catalog against the current template, and the committed ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoresearch import complexity, settings, workspace
from bench.decisions_catalog import CATALOG, KINDS, CatalogError, Edit, apply, baseline, changed
from bench.decisions_replay import (
    LABELS,
    RULES,
    Draws,
    Label,
    Pair,
    Run,
    Variant,
    label,
    labels,
    load,
    ours,
    p_better,
    replay,
)

GROUND_TRUTH = Path(__file__).parent.parent / "bench" / "results" / "decisions_groundtruth.json"
CPU = settings.from_preset("cpu")  # min_noise 0.002, keep_z 2.5, confirm_z 1, 3 baseline runs, 2 confirmations,
# a gain kept on 2 runs


def runs(*values: float, **fields) -> tuple[Run, ...]:
    return tuple(Run(v, **fields) for v in values)


def variant(name: str, *values: float, kind: str = "null", nodes: int = 1000, loaded=(), **fields) -> Variant:
    return Variant(name, kind, nodes, runs(*values, **fields), tuple(loaded))


BASE = variant("baseline", 1.000, 1.002, 0.998, kind="baseline")


def decide_once(base: Variant, change: Variant, seed: int = 0, rules_settings=CPU):
    import random

    rng = random.Random(seed)
    pair = Pair(Draws(base.quiet, rng), Draws(change.quiet, rng), base.complexity, change.complexity)
    return ours(pair, rules_settings)


def test_labels_better_worse_and_no_difference():
    assert label([1.0, 1.002, 0.998], [0.95, 0.951, 0.949]).label == "better"
    assert label([1.0, 1.002, 0.998], [1.05, 1.051, 1.049]).label == "worse"
    assert label([1.0, 1.1, 0.9], [0.98, 1.08, 0.88]).label == "no-difference"
    assert label([1.0, 1.1, 0.9], [0.8, 0.9, 0.7]).label == "unclear"  # 2.4 se: the runs cannot say
    # two groups that agree by luck: the pooled floor keeps a small gain from looking certain
    assert label([1.0, 1.0, 1.0], [0.999, 0.999, 0.999]).label == "better"
    assert label([1.0, 1.0, 1.0], [0.999, 0.999, 0.999], sigma_floor=0.01).label == "no-difference"
    with pytest.raises(ValueError, match="at least 2 runs"):
        label([1.0], [0.9, 0.9])


def test_labels_pool_the_noise_of_every_variant():
    noisy = variant("noisy", 1.0, 1.2, 0.8)
    tight = variant("tight", 0.995, 0.995, 0.995)
    got = labels(BASE, [noisy, tight])
    assert got["tight"].label == "no-difference"  # 0.005 is within 3 se of the pooled noise
    assert got["noisy"].label == "no-difference"


def test_a_clear_gain_is_kept_by_ours_once_a_second_run_shows_it_again():
    gain = variant("gain", 0.95, 0.951, 0.949, kind="gain")
    scores = replay(BASE, [gain], labels(BASE, [gain]), CPU, trials=50)
    assert scores["ours"].missed_gain_rate == 0
    assert scores["ours"].runs_per_decision == 2  # keep_runs
    assert scores["bootstrap"].missed_gain_rate == 0 and scores["bootstrap"].runs_per_decision == 3
    assert scores["reference"].missed_gain_rate == 0 and scores["reference"].runs_per_decision == 1
    one_run = settings.from_preset("cpu", keep_runs=1)
    assert replay(BASE, [gain], labels(BASE, [gain]), one_run, trials=50)["ours"].runs_per_decision == 1


def test_a_gain_seen_once_that_the_second_run_does_not_repeat_is_not_kept():
    # one lucky run (0.95) and the change's own spread: pooled with the baseline's, the noise is
    # 0.029 and the mean of two runs (0.985) is 0.6 se from the best
    lucky = variant("lucky", 0.95, 1.02, kind="null")
    outcome = decide_once(BASE, lucky, seed=1)
    assert not outcome.kept and outcome.runs >= 2
    assert {decide_once(BASE, lucky, seed=seed).kept for seed in range(10)} == {False}


def test_a_null_change_with_huge_noise_is_not_kept_by_ours_but_by_the_reference():
    base = variant("baseline", 1.0, 1.1, 0.9, kind="baseline")
    null = variant("null", 1.0, 1.1, 0.9)
    truth = labels(base, [null])
    assert truth["null"].label == "no-difference"
    scores = replay(base, [null], truth, CPU, trials=600)
    assert scores["ours"].false_keep_rate == 0  # the most a run can gain, 0.1, is under 2 se = 0.23
    assert scores["bootstrap"].false_keep_rate < 0.1
    # one run against one run of the same three values: strictly lower in 3 of 9 pairs
    assert scores["reference"].false_keep_rate == pytest.approx(1 / 3, abs=0.06)
    assert scores["ours"].missed_gain_rate is None  # no better change: no rate


def test_a_clear_loss_is_never_kept():
    loss = variant("loss", 1.2, 1.21, 1.19, kind="loss")
    truth = labels(BASE, [loss])
    assert truth["loss"].label == "worse"
    scores = replay(BASE, [loss], truth, CPU, trials=50)
    assert all(s.false_keep_rate == 0 for s in scores.values())


def test_a_borderline_gain_gets_its_confirmation_runs_counted():
    # identical runs: sigma is the floor 0.002; se of one run against three is 0.00231, so a gain of
    # 0.0042 is borderline (between 1 and 2.5 se) after one run and after two, and clear after three
    base = variant("baseline", 1.0, 1.0, 1.0, kind="baseline")
    borderline = variant("borderline", 0.9958, 0.9958, 0.9958)
    outcome = decide_once(base, borderline)
    assert (outcome.kept, outcome.runs, outcome.why) == (True, 3, "gain")
    scores = replay(base, [borderline], {"borderline": label([1, 1, 1], [0.99, 0.99, 0.99])}, CPU, trials=20)
    assert scores["ours"].runs_per_decision == 3


def test_disturbed_runs_are_run_again_and_counted():
    # on the wall clock a run that others competed with is set aside: 2 re-runs for each of the two
    # runs a keep needs, then used
    wall = settings.from_preset("cpu", clock="wall")
    clear = variant("clear", 0.95, 0.95, contention=0.9)
    outcome = decide_once(BASE, clear, rules_settings=wall)
    assert (outcome.kept, outcome.runs) == (True, 6)
    base = Variant("baseline", "baseline", 1000, runs(1.0, 1.002, 0.998, contention=0.9))
    assert decide_once(base, variant("clear", 0.95, 0.95), rules_settings=wall).baseline_runs == 3 + 2 * 3
    # on the cpu clock (the preset's) others' CPU use does not shorten training: nothing re-run
    assert decide_once(base, variant("clear", 0.95, 0.95, contention=0.9)).runs == 2
    assert decide_once(base, variant("clear", 0.95, 0.95)).baseline_runs == 3


def test_a_run_much_slower_than_earlier_runs_of_its_variant_is_run_again():
    # steps per second 40% below the first baseline run's: set aside on either clock (max_slowdown 25%)
    base = Variant("baseline", "baseline", 1000, (Run(1.0, speed=10.0), Run(1.3, speed=6.0), Run(1.002, speed=10.0),
                                                  Run(0.998, speed=9.8)))
    spent = [decide_once(base, variant("clear", 0.95, 0.95), seed=seed).baseline_runs for seed in range(30)]
    # 4 when the slow run comes after a fast one (set aside, one more drawn); 3 when it comes first
    # (no earlier run to be slower than: used) or after the three it needs
    assert set(spent) == {3, 4}


def test_draws_use_no_run_twice_while_unused_ones_are_left():
    import random

    pool = runs(1.0, 2.0, 3.0)
    draws = Draws(pool, random.Random(0))
    first = [draws.next() for _ in range(3)]
    assert sorted(r.val_bpb for r in first) == [1.0, 2.0, 3.0] and draws.reused == 0
    draws.set_aside(first[0])  # a disturbed run stands for its own re-run once the others are out
    assert draws.next() is first[0] and draws.reused == 1
    assert draws.next() in pool and draws.reused == 2  # none set aside: any run again


def test_prices_and_the_held_out_check_apply():
    # a gain of 0.01 clears 2 se (0.0046) but not with 1,000 nodes more (+0.02)
    costly = Variant("costly", "gain", 2000, runs(0.99, 0.99, 0.99))
    assert decide_once(BASE, costly).why == "complexity"
    assert not decide_once(BASE, costly).kept
    # held-out/val up by 20% against the baseline's 1.0: the loop turns the keep invalid
    base = Variant("baseline", "baseline", 1000, runs(1.0, 1.002, 0.998, heldout_bpb=1.0))
    suspicious = Variant("suspicious", "gain", 1000, runs(0.95, 0.95, heldout_bpb=1.14))
    outcome = decide_once(base, suspicious)
    assert (outcome.kept, outcome.why) == (False, "held-out")


def test_unclear_changes_score_no_rule_but_cost_runs():
    unclear = variant("unclear", 0.997, 0.998, 0.996)
    truth = {"unclear": Label("unclear", 0.003, 0.0012)}
    scores = replay(BASE, [unclear], truth, CPU, trials=30)
    assert scores["ours"].false_keep_rate is None and scores["ours"].missed_gain_rate is None
    assert scores["reference"].runs_per_decision == 1 and scores["ours"].decisions == 30


def test_rates_are_counted_per_decision_and_each_change_weighs_the_same():
    gain = variant("gain", 0.95, 0.951, 0.949, kind="gain")
    loss = variant("loss", 1.2, 1.21, 1.19, kind="loss")
    null = variant("null", 1.0, 1.002, 0.998)
    truth = labels(BASE, [gain, loss, null])
    assert [truth[n].label for n in ("gain", "loss", "null")] == ["better", "worse", "no-difference"]
    scores = replay(BASE, [gain, loss, null], truth, CPU, trials=40)
    ref = scores["reference"]
    assert ref.decisions == 120 and ref.should_keep == 40 and ref.should_not_keep == 80
    assert ref.false_keeps == round(ref.per_change["null"]["keep_rate"] * 40)
    assert ref.false_keep_rate == pytest.approx(ref.per_change["null"]["keep_rate"] / 2)
    assert ref.line("reference").startswith("rule=reference false_keep_rate=")
    # the gain: 2 runs (keep_runs); the loss and the null change: 1 each
    assert scores["ours"].line("ours").split()[2:] == ["missed_gain_rate=0.000", "runs_per_decision=1.33"]


def test_the_rules_see_the_same_draws_and_replays_repeat():
    null = variant("null", 1.0, 1.003, 0.997, 1.001, 0.999)
    truth = labels(BASE, [null])
    one = replay(BASE, [null], truth, CPU, trials=100, seed=3)
    two = replay(BASE, [null], truth, CPU, trials=100, seed=3)
    assert {k: v.as_dict() for k, v in one.items()} == {k: v.as_dict() for k, v in two.items()}


def test_loaded_runs_are_judged_against_the_quiet_labels():
    gain = variant("gain", 0.95, 0.951, 0.949, kind="gain", loaded=runs(1.3, 1.31))  # the load hid it
    base = Variant("baseline", "baseline", 1000, BASE.quiet, runs(1.0, 1.001))
    truth = labels(base, [gain])
    scores = replay(base, [gain], truth, CPU, condition="loaded", trials=20)
    assert scores["ours"].missed_gain_rate == 1
    assert scores["ours"].reused == 20  # the best needs 3 runs and has 2 loaded ones: one is drawn again


def test_p_better_is_the_exact_bootstrap():
    assert p_better([1.0, 1.0, 1.0], [0.9, 0.9, 0.9]) == 1
    assert p_better([1.0, 1.1, 0.9], [1.0, 1.1, 0.9]) == pytest.approx(0.5)
    assert p_better([1.0, 1.0, 1.0], [1.1, 1.1, 1.1]) == 0
    # one of three change runs better than every base run: P is its resamples' share that win
    assert 0 < p_better([1.0, 1.0, 1.0], [0.9, 1.05, 1.05]) < 0.95


def test_every_catalog_change_applies_to_the_current_cpu_template():
    template = workspace.train_template(settings.from_preset("cpu"))
    base = baseline(template)
    assert base != template
    assert len(CATALOG) >= 12 and {c.kind for c in CATALOG} == set(KINDS)
    assert len({c.name for c in CATALOG}) == len(CATALOG)
    assert {c.kind for c in CATALOG if c.quick} == {"gain", "loss", "null"}
    nodes = complexity.measure(base)
    for change in CATALOG:
        source = changed(base, change)
        assert source != base, change.name
        delta = complexity.measure(source) - nodes
        if change.name == "dead-code":
            assert delta > 0
        elif change.kind == "null":
            assert delta == 0, change.name  # comments, names and order are free


def test_an_edit_that_no_longer_applies_says_which():
    with pytest.raises(CatalogError, match="NO_SUCH"):
        apply("X = 1\n", (Edit("set", "NO_SUCH", "1"),))
    with pytest.raises(CatalogError, match="starts with 'def nowhere'"):
        apply("X = 1\n", (Edit("insert_before", "def nowhere", "pass\n"),))
    with pytest.raises(CatalogError, match="exactly 1"):
        apply("import time\nimport time\n", (Edit("replace", "import time", ""),))
    with pytest.raises(CatalogError, match="unknown edit op"):
        apply("X = 1\n", (Edit("patch", "X", "2"),))


def test_the_committed_ground_truth_is_complete_and_consistent():
    doc, base, changes = load(GROUND_TRUTH)
    assert doc["benchmark"] == "bench/decisions.py" and doc["machine"] and doc["date"]
    assert doc["repeats"] >= 3 and doc["overrides"]["time_budget"] > 0
    assert base.kind == "baseline" and len(changes) >= 4
    assert {c.kind for c in changes} <= set(KINDS)
    for v in (base, *changes):
        assert len(v.quiet) >= 2 and len(v.loaded) >= 2, v.name
        assert all(r.val_bpb > 0 and r.heldout_bpb and r.contention is not None for r in (*v.quiet, *v.loaded))
        assert v.complexity and v.complexity > 1000
    assert set(doc["labels"]) == {c.name for c in changes}
    truth = labels(base, changes, doc["label_z"])
    for c in changes:  # the saved labels are the raw runs' labels
        saved = doc["labels"][c.name]
        assert saved["label"] in LABELS and saved["label"] == truth[c.name].label
        assert saved["gain"] == pytest.approx(truth[c.name].gain)
        assert isinstance(saved["heldout_flagged"], bool)
    results = doc["replay"]["results"]
    assert set(results) == {"quiet", "loaded"}
    for condition in results.values():
        assert set(condition) == set(RULES)
        for score in condition.values():
            for rate in ("false_keep_rate", "missed_gain_rate"):
                assert score[rate] is None or 0 <= score[rate] <= 1
            assert score["runs_per_decision"] >= 1
    json.dumps(doc)  # plain JSON throughout


def test_t_quantiles_for_the_noise_estimate_s_degrees_of_freedom():
    from bench.decisions_replay import t_quantile, with_t_thresholds

    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-3)  # the table's values
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    two = settings.from_preset("cpu", keep_z=2.0)
    wide = with_t_thresholds(two, 2)  # sigma from three runs: keep_z 2 becomes 4.53, confirm_z 1 becomes 1.32
    assert wide.keep_z == pytest.approx(4.53, abs=0.01) and wide.confirm_z == pytest.approx(1.32, abs=0.01)
    assert with_t_thresholds(two, 1000).keep_z == pytest.approx(2.0, abs=0.01)


def test_replay_of_a_bad_file_says_what_is_wrong(tmp_path):
    import subprocess
    import sys

    bench = Path(__file__).parent.parent / "bench" / "decisions.py"
    (tmp_path / "other.json").write_text("{}")
    for path, says in ((tmp_path / "missing.json", "cannot read"), (tmp_path / "other.json", "is not a ground-truth file")):
        done = subprocess.run([sys.executable, str(bench), "--replay", str(path)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr
