"""A research workspace: the git repository that `autoresearch init` creates.

    train.py            the proposer's file (the only one that may change in an experiment)
    program.md          the human's brief to the agent
    prepare.py          the fixed harness API (verified byte for byte before each run)
    autoresearch.toml   the fixed settings (self-verifying hash)
    results.tsv, runs/, notes.md, .autoresearch/   untracked, written by the harness/proposer
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from autoresearch import atomic, hparams
from autoresearch import settings as settings_mod
from autoresearch.errors import WorkspaceError
from autoresearch.git import Git
from autoresearch.settings import Settings

TRAIN_FILE = "train.py"
PREPARE_FILE = "prepare.py"
PROGRAM_FILE = "program.md"
LEDGER_FILE = "results.tsv"
RUNS_DIR = "runs"
NOTES_FILE = "notes.md"
STATE_DIR = ".autoresearch"
FLIGHTS_FILE = "flights.json"  # in STATE_DIR: what the loop has under way (loop.py writes it)
BEST_FILE = "best.json"  # in STATE_DIR: the best commit the loop decided, per branch, and its ledger (integrity.py)
FIXED_FILES = (PREPARE_FILE, settings_mod.SETTINGS_FILE)
GITIGNORE = f"""# written by the harness and the proposers; never committed
/{LEDGER_FILE}
/{LEDGER_FILE}.damaged
/{RUNS_DIR}/
/{NOTES_FILE}
/{STATE_DIR}/
/progress.png
/report.html
.*.tmp
__pycache__/
*.pyc
"""


def read_flights(root: Path) -> list[dict]:
    """The entries of the loop's state file (.autoresearch/flights.json) of the workspace at `root`:
    what it has under way. [] when there is none (the loop is idle) or it cannot be read."""
    try:
        flights = json.loads((root / STATE_DIR / FLIGHTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [f for f in flights if isinstance(f, dict)] if isinstance(flights, list) else []


def template(name: str) -> str:
    return resources.files("autoresearch.templates").joinpath(name).read_text(encoding="utf-8")


KEEP_RULE_MARK = "{{KEEP_RULE}}"


def program_template(settings: Settings) -> str:
    """The brief, with the keep rule stated in this workspace's numbers."""
    from autoresearch.decide import rule_text

    return template(PROGRAM_FILE).replace(KEEP_RULE_MARK, rule_text(settings))


def train_template(settings: Settings) -> str:
    """The template train.py with the hyperparameter block set to the preset's defaults."""
    return hparams.rewrite(template(TRAIN_FILE), settings_mod.PRESETS[settings.preset].train)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def git(self) -> Git:
        return Git(self.root)

    @property
    def train_py(self) -> Path:
        return self.root / TRAIN_FILE

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_FILE

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def notes_path(self) -> Path:
        return self.root / NOTES_FILE

    def settings(self) -> Settings:
        try:
            return settings_mod.load(self.root)
        except settings_mod.SettingsError:  # again, to name the changed setting from git's copy
            return settings_mod.load(self.root, frozen=self.frozen_settings_text())

    def frozen_settings_text(self) -> str | None:
        """autoresearch.toml as `init` committed it (in the first commit), or None when unknown."""
        roots = (self.git.read("rev-list", "--max-parents=0", "HEAD") or "").split()
        if len(roots) != 1:
            return None
        return self.git.read("show", f"{roots[0]}:{settings_mod.SETTINGS_FILE}")

    def check_fixed_files(self) -> list[str]:
        """Fixed files that are not what the harness wrote; empty when all is well."""
        problems = []
        prepare = self.root / PREPARE_FILE
        if not prepare.exists() or not is_harness_prepare(prepare.read_bytes()):
            problems.append(PREPARE_FILE)
        try:
            settings_mod.load(self.root)
        except settings_mod.SettingsError:
            problems.append(settings_mod.SETTINGS_FILE)
        return problems


# prepare.py as earlier releases wrote it: a workspace made then keeps its own (without the names
# added since), and is still a workspace the harness wrote.
EARLIER_PREPARE_SHA256 = frozenset({
    "e9b97112655d36ed647bb4feb00e7f5fa79ef6c2c7dba37756c4c20bdf0db38f",  # before training_clock (2026-11-27)
})


def is_harness_prepare(data: bytes) -> bool:
    """Whether `data` is a prepare.py this harness or an earlier release wrote."""
    return data == template(PREPARE_FILE).encode("utf-8") or hashlib.sha256(data).hexdigest() in EARLIER_PREPARE_SHA256


def find(start: Path | None = None) -> Workspace:
    """The workspace containing `start` (default: the current folder)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / settings_mod.SETTINGS_FILE).exists():
            return Workspace(folder)
    raise WorkspaceError(
        f"{here} is not inside an autoresearch workspace (no {settings_mod.SETTINGS_FILE}): "
        "run `autoresearch init DIR` first, or cd into a workspace"
    )


def init(directory: Path, settings: Settings) -> Workspace:
    """Create a workspace: the files, a git repository and its first commit."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise WorkspaceError(f"{directory} exists and is not empty: choose a new folder for the workspace")
    directory.mkdir(parents=True, exist_ok=True)
    atomic.write_text(directory / TRAIN_FILE, train_template(settings))
    atomic.write_text(directory / PREPARE_FILE, template(PREPARE_FILE))
    atomic.write_text(directory / PROGRAM_FILE, program_template(settings))
    atomic.write_text(directory / ".gitignore", GITIGNORE)
    settings_mod.save(settings, directory)
    git = Git(directory)
    git.run("init", "--quiet", "--initial-branch=main")
    git.commit_all(f"autoresearch init: preset {settings.preset}, dataset {settings.dataset}, budget {settings.time_budget:g} s")
    return Workspace(directory)
