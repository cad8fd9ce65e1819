"""Which trackers to write, and where, and which webhooks to notify: `[tracking]` in
autoresearch.toml, and the --track and --notify flags.

Like [proposer], the section is outside the frozen settings: `settings_sha256` covers only what
defines a measurement, so adding or changing trackers never makes results incomparable. (The
file is tracked by git: commit the change, since the loop wants a clean working tree.)

    [tracking]
    trackers = ["mlflow", "tensorboard"]   # mlflow | wandb | tensorboard; --track NAME replaces it
    mlflow_tracking_uri = ""               # "": $MLFLOW_TRACKING_URI, else sqlite:///<workspace>/mlflow.db
    tensorboard_dir = ""                   # "": runs/NNNN/tb/; else DIR/NNNN/ (relative to the workspace)
    wandb_project = ""                     # "": the workspace folder's name
    wandb_dir = ""                         # "": $WANDB_DIR, else the workspace (its wandb/ folder)
    notify = ["https://hooks.example.com/x"]  # webhooks (http/https) told of events; --notify URL replaces it
"""

from __future__ import annotations

import sys
import urllib.parse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from autoresearch.errors import SettingsError
from autoresearch.settings import SETTINGS_FILE
from autoresearch.tracking import NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SECTION = "tracking"


@dataclass(frozen=True)
class TrackingConfig:
    trackers: tuple[str, ...] = ()
    mlflow_tracking_uri: str = ""
    tensorboard_dir: str = ""
    wandb_project: str = ""
    wandb_dir: str = ""
    notify: tuple[str, ...] = ()  # webhook URLs (notify.py)

    def with_trackers(self, names: list[str] | tuple[str, ...] | None) -> TrackingConfig:
        """The config with `names` instead of its trackers (None or empty: keep them)."""
        return replace(self, trackers=_names(names)) if names else self

    def with_notify(self, urls: list[str] | tuple[str, ...] | None) -> TrackingConfig:
        """The config with the webhooks `urls` (--notify) instead of its own (None or empty: keep them)."""
        return replace(self, notify=_urls(urls, "--notify")) if urls else self


def _names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise SettingsError(f"[{SECTION}] trackers must be a list of names ({', '.join(NAMES)}), got {names!r}")
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise SettingsError(f"unknown tracker(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return tuple(dict.fromkeys(names))  # in order, once each


def _urls(urls: Any, where: str) -> tuple[str, ...]:
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
        raise SettingsError(f"{where} must be a list of webhook URLs, got {urls!r}")
    for url in urls:
        check_url(url, where)
    return tuple(dict.fromkeys(urls))


def check_url(url: str, where: str = "--notify") -> None:
    """Refuse what is not an http(s) URL with a host, before the loop starts."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise SettingsError(f"{where} {url!r} is not a URL ({e}): give an http:// or https:// address") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise SettingsError(f"{where} {url!r} is not an http:// or https:// URL with a host: give one like "
                            "https://hooks.example.com/autoresearch")


def from_table(table: dict[str, Any]) -> TrackingConfig:
    known = {f.name for f in fields(TrackingConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SettingsError(f"{SETTINGS_FILE}: unknown key(s) {unknown} in [{SECTION}]; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name == "trackers":
            values[name] = _names(value)
        elif name == "notify":
            values[name] = _urls(value, f"[{SECTION}] notify")
        elif isinstance(value, str):
            values[name] = value
        else:
            raise SettingsError(f"[{SECTION}] {name} must be a string, got {value!r}")
    return TrackingConfig(**values)


def load(root: Path) -> TrackingConfig:
    """The [tracking] section of the workspace at `root` (defaults when there is none)."""
    try:
        doc = tomllib.loads((Path(root) / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return TrackingConfig()  # the settings' own loader reports a broken file
    table = doc.get(SECTION, {})
    if not isinstance(table, dict):
        raise SettingsError(f"{SETTINGS_FILE}: [{SECTION}] must be a table")
    return from_table(table)
