"""Helpers for the run tests: a temporary project (a real git repo), a sealed dataset, a scripted agent.

The project holds the real `prepare.py` from the repository root, `tests/tiny_train.py` as
`train.py` and a short `program.md`, committed. The scripted proposer is a test double of the
agent only: it edits train.py (or, to test the rules, other files) the way a script says.
`check_records_and_git` asserts that the records and git agree, the invariant every run test ends on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from autoresearch import knobs, ledger, trust
from autoresearch.agent.base import Proposal, ProposalContext, Usage
from autoresearch.gitops import trial_ref
from autoresearch.runconfig import RunConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = Path(__file__).resolve().parent / "tiny_train.py"
MARKER = "# (experiments go here)"

# Lines a test puts at the very top of train.py: they run before torch is imported, so the
# trials that fail on purpose cost a fraction of a second.
HOOKS = '''import os as _os, sys as _sys, time as _time
if _os.environ.get("TEST_IGNORE_SIGTERM"):
    import signal as _signal
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
if _os.environ.get("TEST_SLEEP_AT_START"):
    print("step 00001 (1.0%) | loss: 9.000000 | remaining: 99s", flush=True)
    _time.sleep(float(_os.environ["TEST_SLEEP_AT_START"]))
if _os.environ.get("TEST_CRASH_AT_START"):
    raise SystemExit("crashing on purpose (TEST_CRASH_AT_START)")
'''


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def tiny_train_source(with_hooks: bool = True) -> str:
    source = TINY_TRAIN.read_text()
    if with_hooks:
        head, _, rest = source.partition('"""\n\nimport os')
        # keep the docstring first; the hooks go right after it
        source = head + '"""\n' + HOOKS + "\nimport os" + rest
    return source


def make_project(root: Path, train_source: str | None = None, ignore_runs: bool = True) -> Path:
    """A committed project: prepare.py, train.py, program.md (+ .gitignore) in a fresh git repo."""
    project = root / "project"
    project.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "prepare.py", project / "prepare.py")
    (project / "train.py").write_text(train_source or tiny_train_source())
    (project / "program.md").write_text("# program\n\nLower val_bpb. Change one thing at a time.\n")
    if ignore_runs:
        (project / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=Tester", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    return project


def sealed_copy(dataset: Path, destination: Path) -> Path:
    """A copy of a dataset whose manifest carries the file hashes `verify_dataset` checks."""
    from autoresearch.data.manifest import seal_dataset

    shutil.copytree(dataset, destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    if "files" not in manifest:
        seal_dataset(destination, manifest)
    return destination


def night_config(project: Path, data_dir: Path, **flags: object) -> RunConfig:
    """A CPU-sized run of `project` on `data_dir`: no noise floor, confirmation or holdout unless asked."""
    # Those are for tests/test_adversarial.py and tests/test_holdout.py; these tests are about the loop's other rules.
    base = {"budget": 20, "tag": "t", "data_dir": str(data_dir), "device": "cpu", "seq_len": 64,
            "eval_tokens": 4096, "startup_allowance": 60, "noise_runs": 0, "confirm_runs": 0, "quarantine_factor": 0,
            "holdout": False}
    config = load_config({**base, **flags}, project_dir=project, environ={})
    config.kill_grace = 1.0
    config.proposal_retries = 1
    # Set AUTORESEARCH_TEST_GUARD_PACKAGE=0 only while the package itself is being edited under the tests.
    config.guard_package = os.environ.get("AUTORESEARCH_TEST_GUARD_PACKAGE", "1") != "0"
    return config


# --- The scripted agent ------------------------------------------------------------------------

Step = Callable[[ProposalContext], str]  # edits files under context.worktree, returns a description


class ScriptedProposer:
    """Plays one scripted step per `propose` call (an invalid proposal's retry is a call too)."""

    name = "scripted"

    def __init__(self, steps: list[Step], cost_usd: float = 0.01, cost_known: bool = True):
        self.steps = list(steps)
        self.contexts: list[ProposalContext] = []
        self.cost_usd = cost_usd
        self.cost_known = cost_known  # False: as an agent on a model without prices

    def propose(self, context: ProposalContext) -> Proposal:
        self.contexts.append(context)
        if not self.steps:
            raise AssertionError("the scripted proposer ran out of steps")
        description = self.steps.pop(0)(context)
        usage = Usage(input_tokens=100, output_tokens=10, cost_usd=self.cost_usd, cost_known=self.cost_known)
        return Proposal(description, usage, [{"role": "scripted", "description": description}])


def set_knob(name: str, value: object) -> Step:
    def step(context: ProposalContext) -> str:
        path = context.worktree / "train.py"
        old = knobs.read_knobs(path.read_text())[name].value_source
        path.write_text(knobs.set_knobs(path.read_text(), {name: value}))
        return f"{name} {old} -> {knobs.format_value(value)}"
    return step


def insert_code(code: str, description: str, at_top: bool = False) -> Step:
    """Put `code` at the experiment marker (or at the very top, before torch is imported)."""
    def step(context: ProposalContext) -> str:
        path = context.worktree / "train.py"
        source = path.read_text()
        if at_top:
            head, _, rest = source.partition(HOOKS)
            source = head + HOOKS + code.rstrip("\n") + "\n" + rest
        else:
            indented = "\n".join("    " + line for line in code.strip("\n").splitlines())
            source = source.replace(MARKER, MARKER + "\n" + indented)
        path.write_text(source)
        return description
    return step


def write_file(name: str, text: str, description: str) -> Step:
    def step(context: ProposalContext) -> str:
        (context.worktree / name).write_text(text)
        return description
    return step


def do_nothing(description: str = "an edit that did not apply") -> Step:
    return lambda context: description


# --- The invariant -----------------------------------------------------------------------------


def decision_score(records: list[ledger.TrialRecord], commit: str) -> float:
    """The mean val_bpb over a commit's scored runs, as the loop's keep rule computes it."""
    scores = []
    for record in records:
        if record.commit == commit and record.status in (ledger.KEEP, ledger.DISCARD) and record.val_bpb is not None:
            runs = record.extra.get("runs") or [{"val_bpb": record.val_bpb}]
            scores += [float(run["val_bpb"]) for run in runs]
    return trust.mean(scores)


def check_records_and_git(project: Path, tag: str, torn_lines: tuple[int, ...] = ()) -> list[ledger.TrialRecord]:
    """Records and git agree: refs, the keep chain, the worktree at the best, run.json's best.

    results.tsv holds one row a record: a resume rebuilds it from trials.jsonl, torn lines and all.
    """
    run_dir = project / "runs" / tag
    log = ledger.read_trials(run_dir)
    assert log.torn_lines == list(torn_lines)
    records = log.records
    numbers = [record.trial for record in records]
    assert numbers == list(range(len(records))), f"trial numbers are not 0..n-1: {numbers}"
    worktree = run_dir / "worktree"
    for record in records:
        if record.commit:
            assert git(project, "rev-parse", trial_ref(tag, record.trial)) == record.commit
            assert git(project, "cat-file", "-t", record.commit) == "commit"
        else:
            assert record.status in (ledger.REJECTED, ledger.INTERRUPTED), record
    kept = [record for record in records if record.status == ledger.KEEP]
    for earlier, later in zip(kept, kept[1:]):  # each keep builds on the previous one
        assert later.parent == earlier.commit
        assert git(project, "merge-base", "--is-ancestor", earlier.commit, later.commit) == ""
    state = json.loads((run_dir / "run.json").read_text())
    head = git(worktree, "rev-parse", "HEAD")
    best = kept[-1].commit if kept else state["baseline_commit"]
    assert head == best, "the worktree is not at the best commit"
    assert git(project, "rev-parse", f"autoresearch/{tag}") == best
    assert git(worktree, "status", "--porcelain") == "", "the worktree is not clean"
    assert state["best"]["commit"] == best
    if kept:
        assert state["best"]["val_bpb"] == kept[-1].val_bpb
        assert state["best"]["trial"] == kept[-1].trial
        # What each keep was decided on: the mean over its commit's runs (the baseline with its
        # noise-floor seeds, a candidate with its confirmation runs). Each keep beat the one before.
        decided = [decision_score(records, record.commit) for record in kept]
        for before, after, record in zip(decided, decided[1:], kept[1:]):
            assert after < before, f"trial {record.trial} was kept at {after} but the best was {before}"
    results = (run_dir / "results.tsv").read_text().splitlines()
    assert results[1:] == [ledger.results_row(record) for record in records]
    return records
