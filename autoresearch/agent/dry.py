"""One dry proposal: ask the configured agent once, on a scratch copy, and show what it would do.

`dry_proposal(config)` copies the project's train.py, prepare.py, program.md (and README.md) into
a temporary git repository, runs the same checks a run makes before its baseline
(factory.prepare_proposer: key, endpoint, model, --max-cost), asks the agent for one proposal
there, and returns its description, the unified diff of train.py, its usage and its transcript.
Nothing is trained, nothing is recorded under runs/, and the user's checkout is not touched.

What this does not show: how the proposal would score (that needs a run), or the history of an
earlier run (the agent is briefed as for the first proposal of a new run).
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoresearch.agent.base import ProposalContext, Usage
from autoresearch.agent.factory import prepare_proposer
from autoresearch.errors import UserError
from autoresearch.runconfig import RunConfig

PROJECT_FILES = ("train.py", "prepare.py", "program.md")
OPTIONAL_FILES = ("README.md",)


@dataclass
class DryProposal:
    agent: str
    description: str
    diff: str  # unified diff of train.py ("" when unchanged)
    changed_files: list[str]  # every file the agent changed in the scratch copy
    usage: Usage
    transcript: list[dict]


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost",
                             "-c", "core.hooksPath=/dev/null", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise UserError(f"git {args[0]} failed in the scratch copy: {result.stderr.strip()}")
    return result.stdout


def dry_proposal(config: RunConfig) -> DryProposal:
    project = config.project_dir
    missing = [name for name in PROJECT_FILES if not (project / name).is_file()]
    if missing:
        raise UserError(f"{project} has no {', '.join(missing)}: run `autoresearch propose` in a project "
                        "(or pass --project-dir)")
    proposer = prepare_proposer(config, None, notes_path=None)
    with tempfile.TemporaryDirectory(prefix="autoresearch-propose-") as scratch_dir:
        scratch = Path(scratch_dir) / "worktree"
        scratch.mkdir()
        for name in PROJECT_FILES + OPTIONAL_FILES:
            if (project / name).is_file():
                shutil.copyfile(project / name, scratch / name)
        _git(scratch, "init", "-q")
        _git(scratch, "add", "-A")
        _git(scratch, "commit", "-q", "-m", "scratch copy for a dry proposal")
        original = (scratch / "train.py").read_text(encoding="utf-8")
        context = ProposalContext(
            worktree=scratch, program_md=(scratch / "program.md").read_text(encoding="utf-8"),
            prepare_py=(scratch / "prepare.py").read_text(encoding="utf-8"), best_train_py=original,
            best_val_bpb=None, history=[], trial_number=1, trial_dir=Path(scratch_dir) / "trial")
        proposal = proposer.propose(context)
        proposed = (scratch / "train.py").read_text(encoding="utf-8")
        changed = [line[3:] for line in _git(scratch, "status", "--porcelain", "-uall").splitlines() if line.strip()]
    diff = "".join(difflib.unified_diff(original.splitlines(keepends=True), proposed.splitlines(keepends=True),
                                        "a/train.py", "b/train.py"))
    return DryProposal(getattr(proposer, "name", config.agent), proposal.description, diff, changed,
                       proposal.usage, proposal.transcript)
