"""A thin, typed wrapper over the git command line (the only git the harness needs)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from autoresearch.errors import WorkspaceError

# Used only when the user has no git identity configured (fresh machines, CI).
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "autoresearch",
    "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
    "GIT_COMMITTER_NAME": "autoresearch",
    "GIT_COMMITTER_EMAIL": "autoresearch@localhost",
}


class Git:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {}), "GIT_TERMINAL_PROMPT": "0"},
        )
        if check and proc.returncode != 0:
            raise WorkspaceError(f"git {' '.join(args)} failed in {self.root}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout.strip()

    def read(self, *args: str, stdin: str | None = None, timeout_s: float = 60.0) -> str | None:
        """Read-only git whose failure is not an error: its output as it is (not stripped, undecodable
        bytes replaced), or None when git is missing, fails or takes longer than `timeout_s`."""
        try:
            proc = subprocess.run(["git", *args], cwd=self.root, input=stdin, capture_output=True, text=True,
                                  errors="replace", timeout=timeout_s,
                                  env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    def is_repo(self) -> bool:
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=self.root, capture_output=True, text=True)
        return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == self.root.resolve()

    def exclude(self, pattern: str) -> None:
        """Ignore `pattern` in this clone only (.git/info/exclude), without touching the tracked .gitignore."""
        path = self.root / self.run("rev-parse", "--git-path", "info/exclude")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        if pattern not in text.splitlines():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + ("" if not text or text.endswith("\n") else "\n") + pattern + "\n",
                            encoding="utf-8")

    def head(self) -> str:
        return self.run("rev-parse", "HEAD")

    def short(self, rev: str = "HEAD") -> str:
        return self.run("rev-parse", "--short=7", rev)

    def branch(self) -> str:
        return self.run("rev-parse", "--abbrev-ref", "HEAD")

    def branch_exists(self, name: str) -> bool:
        return self.run("rev-parse", "--verify", "--quiet", f"refs/heads/{name}", check=False) != ""

    def rev(self, ref: str) -> str:
        return self.run("rev-parse", ref)

    def is_ancestor(self, rev: str, of: str) -> bool:
        """Whether `rev` is `of` or one of its ancestors (False when `rev` is unknown)."""
        return subprocess.run(["git", "merge-base", "--is-ancestor", rev, of], cwd=self.root,
                              capture_output=True).returncode == 0

    def dirty_paths(self) -> list[str]:
        """Tracked files that differ from HEAD and untracked files that are not ignored."""
        # -z: entries end with NUL, names unquoted, and the two status letters (the first may be a
        # space, ` M train.py`) are not stripped away with the output's whitespace.
        paths, entries = [], iter(self._nul_separated("status", "--porcelain", "-z", "--untracked-files=all"))
        for entry in entries:
            if len(entry) < 4:
                continue
            paths.append(entry[3:])
            if entry[0] in "RC":  # a rename or copy: the entry after it is the old name
                next(entries, None)
        return paths

    def changed_since(self, rev: str) -> list[str]:
        """Paths that differ between `rev` and the working tree, including untracked ones."""
        tracked = self.run("diff", "--name-only", rev).splitlines()
        untracked = self.run("ls-files", "--others", "--exclude-standard").splitlines()
        return sorted(set(tracked) | set(untracked))

    def identity_env(self) -> dict[str, str]:
        if self.run("config", "user.email", check=False) and self.run("config", "user.name", check=False):
            return {}
        return FALLBACK_IDENTITY

    def commit_all(self, message: str, paths: list[str] | None = None) -> str:
        self.run("add", "--all", *(["--", *paths] if paths else []))
        self.run("commit", "--no-verify", "--allow-empty", "-m", message, env=self.identity_env())
        return self.head()

    def show(self, rev: str, path: str) -> bytes:
        proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=self.root, capture_output=True)
        if proc.returncode != 0:
            raise WorkspaceError(f"{path} is not in commit {rev[:7]}")
        return proc.stdout

    def diff(self, a: str, b: str, path: str | None = None) -> str:
        return self.run("diff", a, b, *(["--", path] if path else []))

    def commit_file(self, parent: str, path: str, content: bytes, message: str, keep_under: str) -> str:
        """A commit of `parent` with `path` set to `content`, made without touching HEAD, the index or
        the working tree (parallel candidates are committed while the branch stays put); a ref
        `keep_under<hash>` keeps it from garbage collection. Returns its full hash."""
        blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=self.root, input=content,
                              capture_output=True, check=True).stdout.decode().strip()
        with tempfile.TemporaryDirectory(prefix="autoresearch-index-") as scratch:
            index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.run("read-tree", parent, env=index)
            self.run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
            tree = self.run("write-tree", env=index)
        commit = self.run("commit-tree", tree, "-p", parent, "-m", message, env=self.identity_env())
        self.run("update-ref", f"{keep_under}{commit}", commit)
        return commit

    def move_branch(self, rev: str) -> None:
        """The branch, the index and the working tree at `rev`: how a change is kept (the branch moves
        to its commit) or discarded (back to the best). Untracked files stay."""
        self.run("reset", "--quiet", "--hard", rev)

    def clean_untracked(self) -> None:
        """Remove untracked files and folders (not ignored ones)."""
        self.run("clean", "-f", "-d")

    def restore_paths(self, paths: list[str], source: str = "HEAD") -> None:
        """Tracked paths, in the index and the working tree, as `source` has them: an edit or a deletion
        undone, a path that `source` lacks (one only added to the index) removed. Names are taken
        literally, not as patterns."""
        if paths:
            self.run("--literal-pathspecs", "restore", f"--source={source}", "--staged", "--worktree", "--", *paths)

    def tracked_changes(self, rev: str = "HEAD") -> list[tuple[str, str]]:
        """(status, path) for each tracked path that differs between `rev` and the working tree or the
        index: `M` modified, `D` deleted, `A` added (in the index or a later commit), `T` type changed."""
        fields = self._nul_separated("diff", "-z", "--name-status", "--no-renames", rev)
        return list(zip(fields[0::2], fields[1::2]))

    def untracked(self, ignored: bool = False, directories: bool = False) -> list[str]:
        """Untracked files that are not ignored (with `ignored`: only the ignored ones), as relative
        paths, names unquoted; a nested repository is one entry `name/`. With `directories`, a folder
        that holds no tracked file is one entry `name/` (an empty folder too)."""
        return self._nul_separated("ls-files", "-z", "--others", "--exclude-standard",
                                   *(["--ignored"] if ignored else []), *(["--directory"] if directories else []))

    def switch(self, branch: str, force: bool = True) -> None:
        """HEAD on `branch`; with `force`, local changes in the way are thrown away."""
        self.run("checkout", "--quiet", *(["--force"] if force else []), branch)

    def new_branch(self, branch: str) -> None:
        """A new branch at HEAD, checked out (the working tree as it is)."""
        self.run("checkout", "--quiet", "-b", branch)

    def update_ref(self, ref: str, sha: str) -> None:
        self.run("update-ref", ref, sha)

    def delete_ref(self, ref: str) -> None:
        self.run("update-ref", "-d", ref)

    def _nul_separated(self, *args: str) -> list[str]:
        """The NUL-separated fields a `-z` command prints, as file names (any bytes, nothing stripped)."""
        proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        if proc.returncode != 0:
            raise WorkspaceError(f"git {' '.join(args)} failed in {self.root}: {proc.stderr.decode(errors='replace').strip()}")
        return [os.fsdecode(field) for field in proc.stdout.split(b"\0") if field]

    def reset_clean(self, rev: str) -> None:
        """Branch, index and working tree at `rev`, untracked files (not ignored ones) removed."""
        self.move_branch(rev)
        self.clean_untracked()

    def stash_all(self, message: str) -> str:
        """Every uncommitted change (untracked files too, not ignored ones) set aside as a git stash,
        the working tree back at HEAD. Returns the stash's name (`stash@{0}`)."""
        self.run("stash", "push", "--include-untracked", "-m", message, env=self.identity_env())
        return "stash@{0}"

    def tracked_files(self, rev: str) -> dict[str, bytes]:
        """Every file of commit `rev`: path -> content."""
        return {path: self.show(rev, path) for path in self.run("ls-tree", "-r", "--name-only", rev).splitlines()}

    def refs(self) -> dict[str, str]:
        out = self.run("for-each-ref", "--format=%(refname) %(objectname)")
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def patches(self, commits: list[str]) -> dict[str, str]:
        """commit (as given, e.g. short) -> its patch against its parent, for the commits git still has.

        Read-only and tolerant: {} when the root is not a repository's top folder or git fails (the
        report goes on without diffs). Two git calls in all (which commits exist, then all their
        patches), not one per commit: a ledger of a thousand experiments must not mean a thousand
        processes. A commit that changed nothing has the patch "".
        """
        if not commits or not (self.root / ".git").exists():
            return {}
        found = self.read("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(commits) + "\n")
        if found is None:
            return {}
        full = {}
        for given, line in zip(commits, found.splitlines()):
            parts = line.split()
            if len(parts) == 2 and parts[1] == "commit":
                full[parts[0]] = given
        if not full:
            return {}
        shown = self.read("show", "--no-color", "--no-ext-diff", "--format=%x1e%H", "--patch", *full)
        if shown is None:
            return {}
        out = {}
        for chunk in shown.split("\x1e")[1:]:
            sha, _, patch = chunk.partition("\n")
            if sha.strip() in full:
                out[full[sha.strip()]] = patch.strip("\n") + "\n" if patch.strip() else ""
        return out
