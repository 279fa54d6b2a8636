"""gitops against real temporary git repositories: the user's checkout, the run's worktree, trial refs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autoresearch import gitops
from autoresearch.errors import UserError


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def commit_all(cwd: Path, message: str = "work") -> None:
    git(cwd, "add", "-A")
    git(cwd, "-c", "user.name=Human", "-c", "user.email=h@example.com", "commit", "-q", "-m", message)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "train.py").write_text("LR = 0.1\n")
    (path / "prepare.py").write_text("SEQ = 8\n")
    (path / "program.md").write_text("do research\n")
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "start")
    return path


def test_project_must_be_a_git_repository_with_the_three_files(tmp_path: Path, project: Path) -> None:
    bare = tmp_path / "plain"
    bare.mkdir()
    with pytest.raises(UserError, match="not a git repository"):
        gitops.Project(bare)
    (project / "program.md").unlink()
    with pytest.raises(UserError, match="program.md is missing"):
        gitops.Project(project)
    nested = project / "sub"
    nested.mkdir()
    for name in gitops.REQUIRED_FILES:
        (nested / name).write_text("x\n")
    with pytest.raises(UserError, match="inside the git repository"):
        gitops.Project(nested)


def test_refuses_uncommitted_train_or_prepare(project: Path) -> None:
    checkout = gitops.Project(project)
    checkout.check_committed()  # clean: fine
    (project / "program.md").write_text("edited while running is fine\n")
    checkout.check_committed()
    (project / "train.py").write_text("LR = 0.2\n")
    with pytest.raises(UserError, match=r"^train.py has uncommitted changes"):
        checkout.check_committed()
    git(project, "checkout", "--", "train.py")
    (project / "prepare.py").write_text("SEQ = 16\n")
    git(project, "add", "prepare.py")  # staged is still uncommitted
    with pytest.raises(UserError, match=r"^prepare.py has uncommitted changes"):
        checkout.check_committed()


def test_runs_directory_is_ignored_without_touching_tracked_files(project: Path) -> None:
    checkout = gitops.Project(project)
    checkout.ensure_runs_ignored()
    (project / "runs" / "x").mkdir(parents=True)
    (project / "runs" / "x" / "file").write_text("records\n")
    assert git(project, "status", "--porcelain") == ""
    checkout.ensure_runs_ignored()  # idempotent
    assert (project / ".git" / "info" / "exclude").read_text().count("/runs/") == 1


def test_worktree_commits_refs_and_resets(project: Path) -> None:
    checkout = gitops.Project(project)
    start = checkout.head_commit()
    path = project / "runs" / "t" / "worktree"
    checkout.ensure_runs_ignored()
    space = gitops.Workspace.open_or_create(checkout, "t", path, start_commit=start)
    assert space.head() == start
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"  # the user's checkout is untouched
    space.set_trial_ref(0, start)

    (path / "train.py").write_text("LR = 0.2\n")
    assert space.changed_files() == ["train.py"]
    first = space.commit_train_py("LR 0.1 -> 0.2", trial=1)
    assert git(path, "log", "-1", "--format=%an <%ae>|%s") == "autoresearch <autoresearch@localhost>|LR 0.1 -> 0.2"
    assert space.trial_refs() == {0: start, 1: first}
    assert space.commit_info(first) == (start, "autoresearch", "LR 0.1 -> 0.2")
    assert "+LR = 0.2" in space.diff(start, first)
    assert space.show(first, "train.py") == "LR = 0.2\n"

    (path / "notes.txt").write_text("untracked\n")
    (path / "prepare.py").write_text("SEQ = 99\n")
    assert space.changed_files() == ["notes.txt", "prepare.py"]
    space.reset_to(start)  # drops our own commit; the ref keeps it reachable
    assert space.head() == start
    assert space.changed_files() == []
    assert git(project, "rev-parse", "autoresearch/t") == start
    assert space.commit_exists(first)

    space.checkout_file(first, "train.py")  # a repair starts from the crashed source
    assert (path / "train.py").read_text() == "LR = 0.2\n"
    assert space.head() == start
    space.restore(["train.py"])
    assert (path / "train.py").read_text() == "LR = 0.1\n"

    reopened = gitops.Workspace.open_or_create(checkout, "t", path, start_commit=None)
    assert reopened.head() == start


def test_reset_refuses_to_drop_a_commit_autoresearch_did_not_make(project: Path) -> None:
    checkout = gitops.Project(project)
    start = checkout.head_commit()
    path = project / "runs" / "t" / "worktree"
    space = gitops.Workspace.open_or_create(checkout, "t", path, start_commit=start)
    (path / "train.py").write_text("LR = 0.3\n")
    commit_all(path, "a human's change")
    with pytest.raises(gitops.GitError, match="commits by Human"):
        space.reset_to(start)
    assert space.head() != start


def test_worktree_is_recreated_when_deleted_and_resume_needs_the_branch(project: Path) -> None:
    checkout = gitops.Project(project)
    start = checkout.head_commit()
    path = project / "runs" / "t" / "worktree"
    gitops.Workspace.open_or_create(checkout, "t", path, start_commit=start)
    subprocess.run(["rm", "-rf", str(path)], check=True)
    again = gitops.Workspace.open_or_create(checkout, "t", path, start_commit=None)
    assert again.head() == start
    with pytest.raises(UserError, match="branch autoresearch/other does not exist"):
        gitops.Workspace.open_or_create(checkout, "other", project / "runs" / "other" / "worktree", start_commit=None)


def test_git_failures_become_one_line_git_errors(project: Path) -> None:
    checkout = gitops.Project(project)
    space = gitops.Workspace.open_or_create(checkout, "t", project / "runs" / "t" / "worktree",
                                            start_commit=checkout.head_commit())
    with pytest.raises(gitops.GitError) as failure:
        space.show("0" * 40, "train.py")
    assert "\n" not in str(failure.value)
    assert str(failure.value).startswith("git failed while reading train.py")


def test_stale_index_lock_is_removed(project: Path) -> None:
    checkout = gitops.Project(project)
    space = gitops.Workspace.open_or_create(checkout, "t", project / "runs" / "t" / "worktree",
                                            start_commit=checkout.head_commit())
    lock = Path(git(space.path, "rev-parse", "--path-format=absolute", "--git-path", "index.lock"))
    lock.write_text("")
    space.remove_stale_locks()
    assert not lock.exists()
    (space.path / "train.py").write_text("LR = 0.5\n")
    space.commit_train_py("works again", trial=1)


def test_no_hook_of_the_users_repository_runs_for_autoresearch_git(tmp_path: Path, project: Path) -> None:
    """`--no-verify` skips pre-commit and commit-msg only: prepare-commit-msg, post-commit and
    post-checkout (run by `git worktree add`) must not run either."""
    hooks = project / ".git" / "hooks"
    ran = tmp_path / "hooks-ran"
    for name in ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "post-checkout"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> '{ran}'\n")
        hook.chmod(0o755)
    # The hooks do run for a plain git command in this repository (the test would prove nothing otherwise).
    subprocess.run(["git", "-c", "user.name=H", "-c", "user.email=h@example.com", "commit", "-q",
                    "--allow-empty", "-m", "live hooks"], cwd=project, check=True)
    assert "post-commit" in ran.read_text()
    ran.unlink()

    workspace = gitops.Workspace.open_or_create(gitops.Project(project), "t", project / "runs" / "t" / "worktree",
                                                start_commit=git(project, "rev-parse", "HEAD"))
    (workspace.path / "train.py").write_text("LR = 0.2\n")
    workspace.commit_train_py("LR 0.1 -> 0.2", 1)
    workspace.reset_to(git(project, "rev-parse", "main"))
    workspace.checkout_file(git(project, "rev-parse", "refs/autoresearch/t/trial-0001"))
    assert not ran.exists(), f"hooks ran: {ran.read_text()}"


def test_a_failed_worktree_add_leaves_no_branch_so_a_retry_works(project: Path) -> None:
    """`git branch` succeeds, `git worktree add` fails: the new branch must not block every retry."""
    admin = project / ".git" / "worktrees"
    admin.write_text("a file where git wants a directory\n")  # makes `git worktree add` fail
    start = git(project, "rev-parse", "HEAD")
    with pytest.raises(gitops.GitError, match="preparing the run's worktree"):
        gitops.Workspace.open_or_create(gitops.Project(project), "t", project / "runs" / "t" / "worktree",
                                        start_commit=start)
    assert git(project, "branch", "--list", "autoresearch/t") == ""
    admin.unlink()
    workspace = gitops.Workspace.open_or_create(gitops.Project(project), "t", project / "runs" / "t" / "worktree",
                                                start_commit=start)
    assert workspace.head() == start
