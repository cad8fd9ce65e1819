from __future__ import annotations

import subprocess
import sys

import pytest

from autoresearch import settings as S
from autoresearch.clock import CPU_CLOCK_HARD_FACTOR
from autoresearch.errors import SettingsError


def test_gpu_preset_keeps_the_reference_constants():
    s = S.from_preset("gpu")
    assert (s.max_seq_len, s.time_budget, s.eval_tokens, s.vocab_size, s.dataset) == (
        2048, 300.0, 40 * 524288, 8192, "climbmix")


def test_cpu_preset_is_smaller_in_every_dimension():
    cpu, gpu = S.from_preset("cpu"), S.from_preset("gpu")
    assert cpu.dataset == "pystdlib"
    assert cpu.max_seq_len < gpu.max_seq_len and cpu.vocab_size < gpu.vocab_size and cpu.eval_tokens < gpu.eval_tokens


def test_toml_round_trip_and_tamper_detection(tmp_path):
    s = S.from_preset("cpu", time_budget=120)
    S.save(s, tmp_path)
    assert S.load(tmp_path) == s
    path = tmp_path / S.SETTINGS_FILE
    path.write_text(path.read_text().replace("eval_tokens = 131072", "eval_tokens = 1024"))
    with pytest.raises(SettingsError, match="changed after init.*git checkout -- autoresearch.toml"):
        S.load(tmp_path)
    path.write_text("[research\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        S.load(tmp_path)
    with pytest.raises(SettingsError, match="run inside a workspace"):
        S.load(tmp_path / "nowhere")


def test_fingerprint_changes_with_any_setting():
    a = S.from_preset("cpu")
    assert a.sha256() == S.from_preset("cpu").sha256()
    assert a.sha256() != S.from_preset("cpu", eval_tokens=a.eval_tokens * 2).sha256()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(time_budget=0), "time_budget must be positive"),
        (dict(vocab_size=100), "vocab_size must be between"),
        (dict(eval_tokens=10), "at least one row"),
        (dict(max_seq_len="long"), "must be int"),
        (dict(colour="red"), "unknown setting 'colour'"),
        (dict(hard_limit=5.0), "hard_limit .* shorter than budget"),
        (dict(dataset="nope"), "unknown dataset"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(overrides, message):
    with pytest.raises(SettingsError, match=message):
        S.from_preset("tiny", **overrides)


def test_hard_limit_defaults_to_twice_the_budget_plus_allowance():
    s = S.from_preset("cpu", clock="wall")
    assert s.effective_hard_limit == 2 * s.time_budget + s.startup_allowance
    assert s.deadline == s.time_budget + s.startup_allowance
    # the cpu preset's own clock counts CPU time: a loaded run may take longer on the wall
    assert S.from_preset("cpu").effective_hard_limit == CPU_CLOCK_HARD_FACTOR * s.effective_hard_limit
    assert S.from_preset("cpu").clock_hard_limit == s.effective_hard_limit  # counted on its own clock


def test_settings_module_imports_without_torch():
    # `autoresearch --help` and settings handling must not pay for importing torch.
    code = "import sys, autoresearch.settings, autoresearch.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_each_setting_states_its_section_and_help_once_in_its_field():
    import dataclasses

    names = [f.name for f in dataclasses.fields(S.Settings)]
    assert list(S.SECTIONS) == ["research", "data", "runner", "decision"]
    assert [name for keys in S.SECTIONS.values() for name in keys] == names  # each once, in field order
    assert all(S.HELP[name] for name in names)
    text = S.to_toml(S.from_preset("cpu"))
    assert f"keep_z = 2.5  # {S.HELP['keep_z']}\n" in text  # the keep rule's lines carry their help
    assert "\nvocab_size = 4096\n" in text  # the other tables carry none
