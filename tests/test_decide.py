"""The keep rule on constructed results: every branch and its boundaries (docs/decisions.md)."""

from __future__ import annotations

import pytest

from autoresearch import complexity, decide, ledger, settings, status, workspace
from autoresearch.decide import Runs
from autoresearch.errors import SettingsError

SIGMA = 0.001
EPS = 1e-9  # just either side of a boundary
BEST_NODES = 3000
# keep_runs 1: the branches on one run; the second run a gain needs by default is tested on its own below
RULE = dict(min_noise=SIGMA, keep_z=2.0, keep_runs=1, confirm_z=1.0, confirm_runs=2, baseline_runs=3,
            complexity_cost=0.001, simplify_nodes=20, simplify_z=1.0, memory_free=0.10, memory_cost=0.01,
            max_memory_gb=0.0)


@pytest.fixture
def s() -> settings.Settings:
    return settings.from_preset("gpu", **RULE)


BEST = Runs([1.0, 1.0, 1.0], BEST_NODES, [10.0, 10.0, 10.0])
SE1 = decide.standard_error(SIGMA, 1, 3)  # one candidate run against the best's three
SE3 = decide.standard_error(SIGMA, 3, 3)  # three (after two confirmation runs)
KEEP_AT, CONFIRM_AT = 2 * SE1, SE1


def cand(gain: float, nodes: int = 0, memory_gb: float = 10.0, runs: int = 1) -> Runs:
    """A candidate `runs` times measured at gain `gain`, adding `nodes`, at `memory_gb` peak."""
    return Runs([1.0 - gain] * runs, BEST_NODES + nodes, [memory_gb] * runs)


def judge(c: Runs, s, limit: float | None = None) -> decide.Decision:
    return decide.decide(c, BEST, SIGMA, s, memory_limit_gb=limit)


# --- the complexity measure ---------------------------------------------------------------------

PLAIN = '''
import math

def rate(step, total):
    """Learning-rate multiplier."""
    if step < total // 2:
        return 1.0
    return max(0.0, (total - step) / (total / 2))

x = [rate(s, 100) for s in range(100)]
'''

REFORMATTED = '''
# a comment at the top
import math


def rate(
    step,
    total,
):  # trailing commas, one argument per line
    # no docstring now, a comment instead
    if (step < (total // 2)):
        return (1.0)
    """a string used as a block comment"""
    return max(
        0.0,
        (total - step) / (total / 2),  # trailing comma
    )


x = [rate(s, 100)
     for s in range(100)]
'''


def test_complexity_ignores_comments_docstrings_and_formatting():
    assert complexity.measure(PLAIN) == complexity.measure(REFORMATTED)
    assert complexity.measure("x = self.proj(a, b)") == 7
    assert complexity.measure("x = 1\n") < complexity.measure("x = 1\ny = x + 1\n")


def test_complexity_counts_code_added_and_removed():
    more = PLAIN + "\ndef unused(a):\n    return [a * i for i in range(10)]\n"
    assert complexity.measure(more) - complexity.measure(PLAIN) > 10
    fewer = PLAIN.replace("    if step < total // 2:\n        return 1.0\n", "")
    assert complexity.measure(fewer) < complexity.measure(PLAIN)


def test_complexity_of_broken_code_is_unknown():
    assert complexity.measure("def f(:\n") is None
    assert complexity.measure("x = 1\0") is None  # a null byte


def test_complexity_of_the_template_ignores_its_comments():
    source = workspace.template("train.py")
    stripped = "\n".join(line.split("  # ")[0].rstrip() for line in source.splitlines()
                         if not line.lstrip().startswith("#"))
    assert complexity.measure(stripped) == complexity.measure(source) > 1000


# --- 1. the hard memory limit ---------------------------------------------------------------------

def test_over_the_hard_memory_limit_is_discarded_whatever_the_gain(s):
    d = judge(cand(0.5, memory_gb=12.0), s, limit=11.0)
    assert (d.verdict, d.rule) == ("discard", "memory-limit") and "12.00 GB" in d.reason
    assert judge(cand(0.5, memory_gb=11.0), s, limit=11.0).verdict == "keep"  # at the limit is allowed
    assert judge(cand(0.5, memory_gb=12.0), s, limit=None).verdict == "keep"  # no limit known


def test_the_limit_is_checked_on_the_peak_of_any_run(s):
    c = Runs([0.9, 0.9], BEST_NODES, [10.0, 12.0])
    assert judge(c, s, limit=11.0).rule == "memory-limit"


# --- 2. a clear gain ------------------------------------------------------------------------------

def test_a_gain_clear_of_the_noise_is_kept_at_the_boundary(s):
    d = judge(cand(KEEP_AT + EPS), s)
    assert (d.verdict, d.rule) == ("keep", "gain") and d.threshold == pytest.approx(KEEP_AT)
    assert judge(cand(KEEP_AT - EPS), s).verdict == "confirm"


def test_added_code_raises_the_bar_by_its_price(s):
    price = 0.001 * 300 / 100
    d = judge(cand(KEEP_AT + price + EPS, nodes=300), s)
    assert (d.verdict, d.rule) == ("keep", "gain")
    assert d.prices.complexity == pytest.approx(price) and d.prices.complexity_delta == 300
    assert d.threshold == pytest.approx(KEEP_AT + price)
    assert "+300 nodes" in d.reason


def test_a_clear_gain_that_does_not_pay_for_its_code_is_discarded(s):
    # 0.001 improvement for 20 lines (~165 nodes) of code: the reference's "probably not worth it"
    d = judge(cand(2 * SE3 + 0.001, nodes=165, runs=3), s)
    assert (d.verdict, d.rule) == ("discard", "complexity")
    assert "does not pay for +165 nodes" in d.reason
    # the same gain with the code it needs priced below it is kept
    assert judge(cand(2 * SE3 + 0.001, nodes=90, runs=3), s).verdict == "keep"


def test_complexity_sinking_a_gain_to_borderline_earns_confirmation_runs(s):
    price = 0.001 * 200 / 100
    d = judge(cand(KEEP_AT + price - EPS, nodes=200), s)
    assert d.verdict == "confirm" and "less prices" in d.reason
    d = judge(cand(2 * SE3 + price - EPS, nodes=200, runs=3), s)  # no confirmation runs left
    assert (d.verdict, d.rule) == ("discard", "complexity")


def test_a_removal_with_a_clear_gain_is_a_gain_and_says_it_is_simpler(s):
    d = judge(cand(KEEP_AT + EPS, nodes=-50), s)
    assert (d.verdict, d.rule) == ("keep", "gain") and "50 nodes fewer" in d.reason
    assert d.prices.complexity == 0  # removing code costs nothing, and earns nothing extra


# --- 3. simplifications ---------------------------------------------------------------------------

def test_a_clearly_simpler_change_within_the_noise_is_kept_as_a_simplification(s):
    for gain in (0.0, -SE1 + EPS, CONFIRM_AT + EPS):  # equal, slightly worse, a borderline gain
        d = judge(cand(gain, nodes=-20), s)
        assert (d.verdict, d.rule) == ("keep", "simplification"), gain
        assert d.simplification and d.threshold == pytest.approx(-SE1)
    assert "20 nodes fewer" in judge(cand(0.0, nodes=-20), s).reason


def test_a_change_just_short_of_clearly_simpler_is_not_a_simplification(s):
    d = judge(cand(0.0, nodes=-19), s)
    assert (d.verdict, d.rule) == ("discard", "noise") and d.prices.complexity == 0


def test_a_simplification_that_may_be_worse_gets_confirmation_runs(s):
    d = judge(cand(-SE1 - EPS, nodes=-100), s)
    assert (d.verdict, d.rule) == ("confirm", "confirm") and "borderline simplification" in d.reason
    d = judge(cand(-KEEP_AT + EPS, nodes=-100), s)
    assert d.verdict == "confirm"
    d = judge(cand(-SE3 - EPS, nodes=-100, runs=3), s)  # confirmation runs spent
    assert (d.verdict, d.rule) == ("discard", "worse")


def test_a_clearly_worse_simplification_is_discarded_at_once(s):
    d = judge(cand(-KEEP_AT - EPS, nodes=-100), s)
    assert (d.verdict, d.rule) == ("discard", "worse") and "worse than a simplification may be" in d.reason


def test_a_simplification_that_grows_memory_must_pay_for_it(s):
    price = 0.01 * (0.5 - 0.1)  # +50% memory, 10% of it free
    d = judge(cand(-SE1 + price + EPS, nodes=-100, memory_gb=15.0), s)
    assert d.rule == "simplification" and d.threshold == pytest.approx(-SE1 + price)
    assert judge(cand(-SE1 + price - EPS, nodes=-100, memory_gb=15.0), s).verdict == "confirm"


# --- 4./5. borderline, noise, worse -----------------------------------------------------------------

def test_a_borderline_gain_gets_confirmation_runs_then_the_mean_decides(s):
    d = judge(cand(CONFIRM_AT + EPS), s)
    assert (d.verdict, d.rule) == ("confirm", "confirm")
    assert judge(cand(CONFIRM_AT - EPS), s).rule == "noise"
    assert judge(cand(CONFIRM_AT + EPS, runs=2), s).verdict == "confirm"  # confirm_runs = 2
    d = judge(cand(1.5 * SE3, runs=3), s)  # the mean of three runs, no runs left: decided
    assert d.se == pytest.approx(SE3) and (d.verdict, d.rule) == ("discard", "noise")
    assert judge(cand(2 * SE3 + EPS, runs=3), s).verdict == "keep"


def test_a_change_within_the_noise_that_adds_code_is_discarded(s):
    d = judge(cand(0.0003, nodes=400), s)
    assert (d.verdict, d.rule) == ("discard", "noise")
    assert d.threshold == pytest.approx(KEEP_AT + 0.004) and "+400 nodes" in d.reason


def test_reformatting_is_neither_rewarded_nor_punished(s):
    # the same source, reformatted: complexity delta 0, so the decision is the noise rule's alone
    nodes = complexity.measure(REFORMATTED) - complexity.measure(PLAIN)
    assert nodes == 0
    for gain in (0.0, CONFIRM_AT + EPS, KEEP_AT + EPS, -KEEP_AT - EPS):
        with_code = judge(cand(gain, nodes=nodes), s)
        without = decide.decide([1.0 - gain], BEST.val_bpb, SIGMA, s)  # no complexity known at all
        assert (with_code.verdict, with_code.rule, with_code.threshold) == (without.verdict, without.rule,
                                                                            without.threshold)
        assert with_code.prices.total == 0


def test_clearly_worse_is_discarded_as_worse(s):
    assert judge(cand(-KEEP_AT - EPS), s).rule == "worse"
    assert judge(cand(-KEEP_AT + EPS), s).rule == "noise"


# --- memory, the soft limit -----------------------------------------------------------------------

def test_memory_growth_within_the_free_allowance_costs_nothing(s):
    d = judge(cand(KEEP_AT + EPS, memory_gb=11.0), s)  # +10%: free
    assert d.verdict == "keep" and d.prices.memory == 0
    assert d.prices.memory_growth == pytest.approx(0.1) and d.prices.memory_delta_gb == pytest.approx(1.0)


def test_memory_growth_beyond_the_soft_limit_needs_a_proportionally_larger_gain(s):
    for growth in (0.3, 0.6, 1.1):
        price = 0.01 * (growth - 0.1)
        mem = 10.0 * (1 + growth)
        d = judge(cand(KEEP_AT + price + EPS, memory_gb=mem), s)
        assert d.verdict == "keep" and d.prices.memory == pytest.approx(price)
        d = judge(cand(2 * SE3 + price - EPS, memory_gb=mem, runs=3), s)
        assert (d.verdict, d.rule) == ("discard", "memory") and "peak memory" in d.reason


def test_code_and_memory_prices_add_up(s):
    c_price, m_price = 0.001 * 100 / 100, 0.01 * (0.5 - 0.1)
    d = judge(cand(KEEP_AT + c_price + m_price + EPS, nodes=100, memory_gb=15.0), s)
    assert d.verdict == "keep" and d.prices.total == pytest.approx(c_price + m_price)
    d = judge(cand(2 * SE3 + 0.5 * (c_price + m_price), nodes=100, memory_gb=15.0, runs=3), s)
    assert d.verdict == "discard" and d.rule in ("complexity", "memory")


def test_unknown_complexity_or_memory_costs_nothing(s):
    d = decide.decide(Runs([1.0 - KEEP_AT - EPS]), BEST, SIGMA, s, memory_limit_gb=1.0)
    assert d.verdict == "keep" and d.prices.complexity_delta is None and d.prices.memory_growth is None


# --- the rule in words, the settings, the ledger, status ------------------------------------------

def test_rule_text_states_the_numbers(s):
    text = decide.rule_text(s, sigma=0.002)
    se = decide.standard_error(0.002, 1, 3)
    for number in (f"{se:.4f}", f"{2 * se:.4f}", "0.001 bpb for every 100", "20 nodes", "free 10%", "0.01 bpb"):
        assert number in text, number
    assert f"{2 * se + 0.002:.4f}" in text  # the worked example: 200 nodes
    assert "floor" in decide.rule_text(s) and "device's total memory" in decide.rule_text(s)
    assert "12 GB" in decide.rule_text(settings.from_preset("gpu", max_memory_gb=12))
    assert status.rule_text(s, 0.002) == text
    assert set(decide.RULES) >= {"gain", "simplification", "confirm", "noise", "worse", "complexity", "memory",
                                 "memory-limit"}


def test_program_md_states_the_rule_with_the_workspace_numbers(tmp_path):
    s = settings.from_preset("tiny", complexity_cost=0.02)
    ws = workspace.init(tmp_path / "ws", s)
    brief = (ws.root / "program.md").read_text()
    assert "{{KEEP_RULE}}" not in brief and decide.rule_text(s) in brief
    assert "0.02 bpb for every 100 syntax-tree nodes" in brief and "simplification" in brief


def test_decision_settings_are_in_the_toml_with_their_meaning(tmp_path):
    s = settings.from_preset("cpu", simplify_nodes=50, memory_free=0.2)
    settings.save(s, tmp_path)
    text = (tmp_path / settings.SETTINGS_FILE).read_text()
    assert "simplify_nodes = 50  # a change at least this many nodes smaller is a simplification" in text
    assert "complexity_cost = 0.002  # bpb of gain" in text
    assert settings.load(tmp_path) == s


@pytest.mark.parametrize("overrides, message", [
    (dict(simplify_z=3.0), "simplify_z <= keep_z"),
    (dict(simplify_nodes=0), "simplify_nodes must be >= 1"),
    (dict(complexity_cost=-0.1), "must not be negative"),
    (dict(max_memory_gb=-1.0), "must not be negative"),
])
def test_bad_decision_settings_are_refused(overrides, message):
    with pytest.raises(SettingsError, match=message):
        settings.from_preset("tiny", **overrides)


def test_ledger_keeps_the_reasons(tmp_path):
    row = ledger.Row(commit="abcdef0123", val_bpb=1.2345678, memory_gb=0.83, status="keep", description="simpler",
                     gain=-0.0004, noise=0.005, complexity=2950, complexity_delta=-143, memory_delta=-0.0123,
                     threshold=-0.0061, rule="simplification", reason="simplification: 143 nodes fewer")
    book = ledger.Ledger.open(tmp_path / "results.tsv")
    book.append(row)
    header = (tmp_path / "results.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header[:5]) == ledger.REFERENCE_COLUMNS
    assert {"complexity", "complexity_delta", "memory_delta", "threshold", "rule", "reason"} <= set(header)
    back = ledger.Ledger.open(tmp_path / "results.tsv").rows[0]
    assert (back.complexity, back.complexity_delta, back.rule) == (2950, -143, "simplification")
    assert back.memory_delta == pytest.approx(-0.012) and back.threshold == pytest.approx(-0.0061)
    assert back.why == "simplification: simplification: 143 nodes fewer"


def test_status_counts_simplifications_and_stands_on_the_last_kept_commit():
    rows = [
        ledger.Row("base000", 1.000, 1.0, "keep", "baseline", kind="baseline", complexity=3000),
        ledger.Row("base000", 1.002, 1.0, "keep", "baseline", kind="baseline", complexity=3000),
        ledger.Row("gain000", 0.950, 1.0, "keep", "faster", rule="gain", complexity=3010, complexity_delta=10),
        ledger.Row("simp000", 0.951, 1.0, "keep", "remove x", rule="simplification", complexity=2900,
                   complexity_delta=-110),
        ledger.Row("nois000", 0.950, 1.0, "discard", "noise", rule="noise", complexity=3300, complexity_delta=400),
    ]
    summary = status.summarize(rows, min_noise=0.001)
    assert summary.best_commit == "simp000" and summary.best == pytest.approx(0.951)
    assert (summary.kept, summary.simplifications) == (2, 1)
    assert (summary.complexity, summary.baseline_complexity) == (2900, 3000)


# --- the device's memory, the default hard limit ----------------------------------------------------

def test_the_default_memory_limit_is_the_devices_total(tmp_path, monkeypatch):
    from autoresearch import devices

    monkeypatch.delenv("AUTORESEARCH_DEVICE", raising=False)
    monkeypatch.setattr(devices, "best_device", lambda: "cpu")
    assert devices.total_memory_gb() > 0.5  # the machine's RAM
    # CUDA is asked through nvidia-smi (the coordinator holds no CUDA context), for the visible GPU
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\necho 81559\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(devices, "best_device", lambda: "cuda")
    assert devices.total_memory_gb() == pytest.approx(81559 / 1024)
    assert "-i 3" in (tmp_path / "args").read_text()
    fake.unlink()
    assert devices.total_memory_gb() is None  # unknown: no limit is checked


# --- a gain seen once is run again (keep_runs) ------------------------------------------------------

def test_the_default_rule_keeps_a_gain_on_its_second_run_at_2_5_se():
    for preset in ("gpu", "cpu"):
        d = settings.from_preset(preset)
        assert (d.keep_z, d.keep_runs, d.confirm_z, d.confirm_runs) == (2.5, 2, 1.0, 2)  # bench/decisions.py


def test_a_clear_gain_on_one_run_is_confirmed_before_it_is_kept(s):
    two = settings.from_preset("gpu", **{**RULE, "keep_runs": 2})
    first = judge(cand(10 * SE1), two)
    assert (first.verdict, first.rule) == ("confirm", "confirm")
    assert "a gain must show on 2 runs to be kept: confirming" in first.reason
    second = judge(cand(10 * SE1, runs=2), two)
    assert (second.verdict, second.rule) == ("keep", "gain")
    # no confirmation runs allowed: one run is all there can be
    none = settings.from_preset("gpu", **{**RULE, "keep_runs": 2, "confirm_runs": 0})
    assert judge(cand(10 * SE1), none).verdict == "keep"
    # a loss or a simplification needs no second run
    assert judge(cand(-10 * SE1), two).verdict == "discard"
    assert judge(cand(0.0, nodes=-100), two).rule == "simplification"


def test_a_candidate_s_own_spread_pools_with_the_best_s():
    # two runs of a candidate 0.1 apart: its spread, pooled with the best's three identical runs,
    # is the noise the decision uses
    got = decide.pooled_sigma([[1.0, 1.0, 1.0], [0.9, 1.0]], SIGMA)
    assert got == pytest.approx(((0.05**2 * 2) / 3) ** 0.5)


def test_keep_runs_below_one_is_refused():
    with pytest.raises(SettingsError, match="keep_runs"):
        settings.from_preset("gpu", keep_runs=0)
