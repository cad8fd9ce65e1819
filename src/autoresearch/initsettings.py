"""The settings a user asks for at `autoresearch init`: --preset, --dataset, --budget and --set.

`--set KEY=VALUE` takes any setting of autoresearch.toml. The three with an option of their own
work either way: `--set preset=cpu` is `--preset cpu`, `--set time_budget=60` is `--budget 60`,
`--set dataset=...` is `--dataset ...`; the same setting given twice with different values is
refused. Every refusal names one setting, what was given and what it must be. A `files:` dataset
is checked here (it must hold a .txt, .jsonl or .parquet file) and frozen as an absolute path, so
that `prepare`, run from inside the workspace, reads the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoresearch import settings as settings_mod
from autoresearch.data.registry import FILES_PREFIX
from autoresearch.errors import DataError, SettingsError

OPTIONS = {"preset": "--preset", "dataset": "--dataset", "time_budget": "--budget"}


@dataclass(frozen=True)
class InitRequest:
    """What the command line asked for: a preset (None: pick one for this machine) and settings."""

    preset: str | None
    values: dict[str, Any] = field(default_factory=dict)  # setting -> value, typed

    def settings(self, preset: str) -> settings_mod.Settings:
        """The preset's settings with the requested values, checked and ready to freeze."""
        values = dict(self.values)
        dataset = values.get("dataset")
        if isinstance(dataset, str) and dataset.startswith(FILES_PREFIX):
            values["dataset"] = local_dataset(dataset)
        return settings_mod.from_preset(preset, **values)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as typed settings; a key given twice must have one value."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"--set takes KEY=VALUE, got {item!r}")
        value = settings_mod.coerce(key, text.strip())
        if key in out and out[key] != value:
            raise SettingsError(f"setting {key} is given twice (--set {key}={out[key]} and --set {item}): give it once")
        out[key] = value
    return out


def request(preset: str | None, dataset: str | None, budget: float | None, sets: list[str]) -> InitRequest:
    """The command line's choices, with --preset/--dataset/--budget and their --set forms merged."""
    values = parse_sets(sets)
    for key, given in (("preset", preset), ("dataset", dataset), ("time_budget", budget)):
        if given is None:
            continue
        given = settings_mod.coerce(key, given)
        if key in values and values[key] != given:
            raise SettingsError(f"setting {key} is given twice with different values ({OPTIONS[key]} {given} and "
                                f"--set {key}={values[key]}): give it once")
        values[key] = given
    chosen = values.pop("preset", None)
    if chosen is not None and chosen not in settings_mod.PRESETS:
        raise SettingsError(f"unknown preset {chosen!r} (setting preset); choose one of: "
                            f"{', '.join(settings_mod.PRESETS)}")
    return InitRequest(chosen, values)


def local_dataset(spec: str) -> str:
    """A `files:PATH` dataset as an absolute path, refused unless it holds at least one input file."""
    from autoresearch.data.sources import LocalFiles  # late: data imports settings

    target = spec[len(FILES_PREFIX):]
    if not target:
        raise SettingsError(f"dataset {spec!r} names no path: use files:FOLDER or files:GLOB")
    absolute = f"{FILES_PREFIX}{Path(target).expanduser().absolute()}"
    try:
        found = LocalFiles(absolute[len(FILES_PREFIX):]).paths()
    except DataError as e:
        raise SettingsError(f"dataset {e}") from None
    if not found:
        raise SettingsError(f"dataset {spec} matches no .txt, .jsonl or .parquet file: check the path or glob "
                            "(relative paths start from the current folder)")
    return absolute
