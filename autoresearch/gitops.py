"""Git for a run: the user's checkout, the run's branch and worktree, and a ref for every trial.

A run works on branch `autoresearch/<tag>`, checked out in its own worktree at
`runs/<tag>/worktree`, so the user's checkout (their HEAD, index and files) is never touched
after the start. Every trial is committed there by the author "autoresearch" and stays reachable
under `refs/autoresearch/<tag>/trial-NNNN` even when the branch is reset past it. GitPython's
errors are caught in this one module and become a one-line `GitError`.

What this does not protect against: someone committing to the run's branch by hand (a reset that
would drop a commit autoresearch did not make is refused, not repaired), `git gc --prune` after
the refs are deleted by hand, or a git wrapper on PATH that is not git. The repository's hooks
never run for autoresearch's git commands (core.hooksPath is pointed at /dev/null for each).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from autoresearch.errors import UserError

AUTHOR_NAME = "autoresearch"
AUTHOR_EMAIL = "autoresearch@localhost"
REQUIRED_FILES = ("train.py", "prepare.py", "program.md")
GUARDED_FILES = ("train.py", "prepare.py")  # must be committed before a run starts
RUNS_DIR = "runs"

# Every git command autoresearch runs ignores the repository's hooks (core.hooksPath=/dev/null:
# no pre-commit, prepare-commit-msg, commit-msg, post-commit or post-checkout script runs; `--no-verify`
# alone skips only the first and the third) and never signs.
_GIT_ENV = {
    "GIT_CONFIG_COUNT": "2",
    "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": os.devnull,
    "GIT_CONFIG_KEY_1": "commit.gpgsign", "GIT_CONFIG_VALUE_1": "false",
}
# Commits are made without the user's identity.
_COMMIT_ENV = {
    **_GIT_ENV,
    "GIT_AUTHOR_NAME": AUTHOR_NAME, "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": AUTHOR_NAME, "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
}


class GitError(UserError):
    """A git operation failed; the message says which and why, in one line."""


@contextmanager
def _git_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except git.GitCommandError as error:
        detail = (error.stderr or error.stdout or "").strip().replace("stderr: ", "").strip("'\" \n")
        first = detail.splitlines()[-1] if detail else f"exit status {error.status}"
        raise GitError(f"git failed while {doing}: {first}") from error
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as error:
        raise GitError(f"{error} is not a git repository (while {doing})") from error
    except (ValueError, git.BadName) as error:
        raise GitError(f"git failed while {doing}: {error}") from error


def branch_name(tag: str) -> str:
    return f"autoresearch/{tag}"


def trial_ref(tag: str, trial: int) -> str:
    return f"refs/autoresearch/{tag}/trial-{trial:04d}"


# --- The user's checkout -------------------------------------------------------------------------


class Project:
    """The user's checkout: a git repository with train.py, prepare.py and program.md at its top."""

    def __init__(self, path: Path):
        path = Path(path).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"project directory {path} does not exist")
        try:
            self.repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise UserError(f"{path} is not a git repository; run `git init` and commit train.py, "
                            "prepare.py and program.md") from None
        self.repo.git.update_environment(**_GIT_ENV)
        top = Path(self.repo.working_tree_dir or "").resolve()
        if top != path:
            raise UserError(f"{path} is inside the git repository {top}; run autoresearch from its top")
        for name in REQUIRED_FILES:
            if not (path / name).is_file():
                raise UserError(f"{path / name} is missing; the project needs train.py, prepare.py and program.md")
        self.path = path
        with _git_errors("reading HEAD"):
            if not self.repo.head.is_valid():
                raise UserError(f"{path} has no commits yet; commit train.py, prepare.py and program.md")

    def head_commit(self) -> str:
        with _git_errors("reading HEAD"):
            return self.repo.head.commit.hexsha

    def check_committed(self, names: tuple[str, ...] = GUARDED_FILES) -> None:
        """Refuse uncommitted (staged, unstaged or untracked) changes to train.py or prepare.py."""
        with _git_errors("checking for uncommitted changes"):
            status = self.repo.git.status("--porcelain=v1", "--untracked-files=all", "--", *names)
        for line in status.splitlines():
            name = line[3:].strip().strip('"')
            if line.startswith("??"):
                raise UserError(f"{name} is not committed; commit it before `autoresearch run`")
            raise UserError(f"{name} has uncommitted changes; commit or stash them before `autoresearch run`")

    def ensure_runs_ignored(self) -> None:
        """Make git ignore runs/ (through .git/info/exclude, a local file) if the project does not."""
        with _git_errors("checking that runs/ is ignored"):
            try:
                self.repo.git.check_ignore("-q", f"{RUNS_DIR}/x")
                return
            except git.GitCommandError as error:
                if error.status != 1:
                    raise
            exclude = Path(self.repo.git.rev_parse("--git-path", "info/exclude"))
        if not exclude.is_absolute():
            exclude = self.path / exclude
        exclude.parent.mkdir(parents=True, exist_ok=True)
        existing = exclude.read_text() if exclude.exists() else ""
        separator = "\n" if existing and not existing.endswith("\n") else ""
        exclude.write_text(f"{existing}{separator}/{RUNS_DIR}/\n")

    def branch_exists(self, tag: str) -> bool:
        with _git_errors("looking up the run's branch"):
            return f"refs/heads/{branch_name(tag)}" in {ref.path for ref in self.repo.branches}

    def branch_commit(self, tag: str) -> str:
        with _git_errors("reading the run's branch"):
            return self.repo.git.rev_parse(f"refs/heads/{branch_name(tag)}")

    def trial_refs(self, tag: str) -> dict[int, str]:
        """{trial number: commit} for every trial ref of run `tag` (kept even when its branch is gone)."""
        with _git_errors("listing the run's trial refs"):
            listing = self.repo.git.for_each_ref("--format=%(refname) %(objectname)", f"refs/autoresearch/{tag}/")
        refs = {}
        for line in listing.splitlines():
            name, _, commit = line.partition(" ")
            suffix = name.rsplit("/trial-", 1)[-1]
            if suffix.isdigit():
                refs[int(suffix)] = commit
        return refs

    def read_file(self, name: str) -> str:
        return (self.path / name).read_text(encoding="utf-8")


# --- The run's worktree --------------------------------------------------------------------------


class Workspace:
    """The run's branch checked out at runs/<tag>/worktree; all trial commits happen here."""

    def __init__(self, project: Project, tag: str, path: Path):
        self.project = project
        self.tag = tag
        self.path = Path(path)
        self.branch = branch_name(tag)
        with _git_errors(f"opening the worktree {self.path}"):
            self.repo = git.Repo(self.path)
        self.repo.git.update_environment(**_GIT_ENV)

    # -- creating and reopening

    @classmethod
    def open_or_create(cls, project: Project, tag: str, path: Path, *, start_commit: str | None) -> Workspace:
        """Reuse the worktree at `path` or (re)create it; a new branch starts at `start_commit`.

        `start_commit` None means the branch must already exist (a resumed run).
        """
        path = Path(path)
        branch = branch_name(tag)
        if (path / ".git").exists():
            try:
                workspace = cls(project, tag, path)
                current = workspace.repo.git.rev_parse("--abbrev-ref", "HEAD")
            except (GitError, git.GitCommandError):
                current = None
            if current == branch:
                return workspace
            raise UserError(f"{path} is not the worktree of branch {branch}; move it away and try again")
        with _git_errors("preparing the run's worktree"):
            project.repo.git.worktree("prune")
            if path.exists():
                if any(path.iterdir()):
                    raise UserError(f"{path} exists and is not a git worktree; move it away and try again")
                path.rmdir()
            created = False
            if not project.branch_exists(tag):
                if start_commit is None:
                    raise UserError(f"branch {branch} does not exist; start a new run instead of resuming")
                project.repo.git.branch(branch, start_commit)
                created = True
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                project.repo.git.worktree("add", "--quiet", str(path), branch)
            except BaseException:
                # A branch this call created must not outlive a failed worktree: with it, every retry
                # would be refused as "the branch already exists".
                if created:
                    with contextlib.suppress(git.GitCommandError):
                        project.repo.git.branch("-D", branch)
                raise
        return cls(project, tag, path)

    # -- reading

    def head(self) -> str:
        with _git_errors("reading the worktree's HEAD"):
            return self.repo.git.rev_parse("HEAD")

    def changed_files(self) -> list[str]:
        """Paths that differ from HEAD in the worktree: modified, added, deleted or untracked."""
        with _git_errors("reading the worktree's status"):
            status = self.repo.git.status("--porcelain=v1", "-z", "--untracked-files=all")
        changed, entries = [], status.split("\0")
        index = 0
        while index < len(entries):
            entry = entries[index]
            index += 1
            if len(entry) < 4:
                continue
            code, name = entry[:2], entry[3:]
            if "R" in code or "C" in code:
                index += 1  # the rename's source follows as its own entry
            if "__pycache__" in Path(name).parts:
                continue
            changed.append(name)
        return sorted(changed)

    def commit_exists(self, commit: str) -> bool:
        try:
            self.repo.git.cat_file("-e", f"{commit}^{{commit}}")
            return True
        except git.GitCommandError:
            return False

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        try:
            self.repo.git.merge_base("--is-ancestor", ancestor, descendant)
            return True
        except git.GitCommandError:
            return False

    def show(self, commit: str, name: str) -> str:
        with _git_errors(f"reading {name} at {commit[:7]}"):
            return self.repo.git.show(f"{commit}:{name}", strip_newline_in_stdout=False)

    def diff(self, parent: str, commit: str, name: str = "train.py") -> str:
        with _git_errors(f"diffing {commit[:7]} against {parent[:7]}"):
            return self.repo.git.diff(parent, commit, "--", name, strip_newline_in_stdout=False)

    def commit_info(self, commit: str) -> tuple[str, str, str]:
        """(first parent, author name, subject) of a commit."""
        with _git_errors(f"reading commit {commit[:7]}"):
            line = self.repo.git.log("-1", "--format=%P%x00%an%x00%s", commit)
        parents, author, subject = line.split("\0", 2)
        return (parents.split() or [""])[0], author, subject

    def trial_refs(self) -> dict[int, str]:
        """{trial number: commit} for every trial ref of this run."""
        return self.project.trial_refs(self.tag)

    # -- changing (only the run's own branch and worktree)

    def commit_train_py(self, message: str, trial: int | None) -> str:
        """Commit train.py and point the trial's ref at it (no ref when `trial` is None); returns the sha."""
        with _git_errors(f"committing trial {trial}" if trial is not None else "committing train.py"):
            self.repo.git.add("--", "train.py")
            self.repo.git.commit("--no-verify", "--quiet", "-m", message, "--", "train.py", env=_COMMIT_ENV)
            commit = self.repo.git.rev_parse("HEAD")
            if trial is not None:
                self.repo.git.update_ref(trial_ref(self.tag, trial), commit)
        return commit

    def set_trial_ref(self, trial: int, commit: str) -> None:
        with _git_errors(f"recording the ref of trial {trial}"):
            self.repo.git.update_ref(trial_ref(self.tag, trial), commit)

    def reset_to(self, commit: str) -> None:
        """Point the run's branch at `commit` and make the worktree match it exactly.

        Only commits autoresearch made may be dropped: a reset that would lose someone else's
        commit on the run's branch is refused.
        """
        with _git_errors(f"resetting the worktree to {commit[:7]}"):
            dropped = self.repo.git.log("--format=%an", f"{commit}..HEAD").splitlines()
            strangers = [author for author in dropped if author != AUTHOR_NAME]
            if strangers:
                raise GitError(f"the branch {self.branch} has commits by {strangers[0]} after {commit[:7]}; "
                               "autoresearch will not drop them")
            self.repo.git.reset("--hard", "--quiet", commit)
            self.repo.git.clean("-fdq")

    def restore(self, names: list[str]) -> None:
        """Put files back as they are at HEAD (a trial changed something it must not)."""
        with _git_errors(f"restoring {', '.join(names)}"):
            self.repo.git.checkout("HEAD", "--", *names)

    def checkout_file(self, commit: str, name: str = "train.py") -> None:
        """Write `name` as it is at `commit` into the worktree, leaving HEAD where it is."""
        with _git_errors(f"checking out {name} from {commit[:7]}"):
            self.repo.git.show(f"{commit}:{name}")  # fails clearly when absent
            (self.path / name).write_text(self.show(commit, name), encoding="utf-8")

    def remove_stale_locks(self) -> None:
        """Delete index.lock left by a killed git process (called only while the run's lock is held)."""
        with _git_errors("finding the worktree's index lock"):
            lock = Path(self.repo.git.rev_parse("--git-path", "index.lock"))
        if not lock.is_absolute():
            lock = self.path / lock
        if lock.exists():
            os.unlink(lock)
