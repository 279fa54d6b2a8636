"""`autoresearch demo`: a real night, shrunk to a few minutes on a laptop CPU with no API key.

    autoresearch demo                 # in the project's checkout: prepare, run, report (~3 min)

The same code as a real night, only smaller: it prepares the built-in `sample` corpus (generated
on the spot, no network) with a small tokenizer, starts a run in the user's checkout on a fresh
branch `autoresearch/demo-YYYYmmdd-HHMMSS` whose first commit shrinks train.py's knobs to a
CPU-sized model (`DEMO_KNOBS`), lets the offline proposer (no LLM) try a handful of changes with
a budget of seconds each, and ends with the report, `runs/<tag>/progress.png` and `report.md`,
then the commands for a real night on a GPU with Claude.

The user's checkout is left as it was: train.py is changed only on the run's branch, in its
worktree under `runs/<tag>/`. The demo refuses to start when train.py or prepare.py has
uncommitted changes (the run starts from the last commit, so they would silently not count).

Each training and evaluation process is given one CPU thread (OMP_NUM_THREADS=1, unless the user
set it): a model this small gains little from a second thread, and on a machine whose other core
is busy, spinning OpenMP threads can make every step fifty times slower, which would turn a
three-minute demo into a timed-out one.

What this does not protect against: a machine much slower than a 2-core laptop (trials still
train for their budget, but fewer steps make a less convincing curve), and the numbers saying
anything about a real model: this is a model of 0.3 M parameters on procedural children's stories.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

from autoresearch.errors import UserError
from autoresearch.runconfig import RunConfig, load_config

DEMO_DATASET = "sample-demo"  # not "sample": `prepare --dataset sample` builds that one at the full vocabulary
DEMO_VOCAB_SIZE = 1024  # measured on 2 cores, 10 s: val_bpb 0.45 (vs 0.48 at 512, 0.59 at 2048; one seed each)
DEMO_SEQ_LEN = 128
DEMO_EVAL_TOKENS = 2**15  # 256 rows of 128 tokens: a few seconds to score
DEFAULT_TRIALS = 6  # proposals after the baseline (and the noise-floor run)
DEFAULT_BUDGET = 10.0  # seconds of training per trial
DEMO_NOISE_RUNS = 1  # the baseline once more with another seed, so the report shows a noise floor
DEMO_CONFIRM_RUNS = 1  # a candidate keep is trained once more before it is kept
DEMO_STARTUP_ALLOWANCE = 45.0  # seconds past the budget before a trial is killed
DEMO_EVAL_TIMEOUT = 120.0
# train.py shrunk to a CPU: 2 layers of width 64 (0.3 M parameters with the 1024-token vocabulary),
# one forward pass of 8 x 128 tokens per optimizer step, no torch.compile.
DEMO_KNOBS: dict[str, object] = {
    "DEPTH": 2,
    "ASPECT_RATIO": 32,
    "HEAD_DIM": 32,
    "DEVICE_BATCH_SIZE": 8,
    "TOTAL_BATCH_SIZE": 2**10,
    "COMPILE": False,
    "EVAL_BATCH_SIZE": 32,
}
TAG_PREFIX = "demo-"


def demo_tag(project_dir: Path, now: _dt.datetime | None = None) -> str:
    """`demo-YYYYmmdd-HHMMSS`, with `-2`, `-3`, ... when that run or branch already exists."""
    from autoresearch.gitops import Project

    base = TAG_PREFIX + (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    project = Project(project_dir)
    tag, number = base, 1
    while (project_dir / "runs" / tag).exists() or project.branch_exists(tag):
        number += 1
        tag = f"{base}-{number}"
    return tag


def check_project(project_dir: Path) -> None:
    """The checkout the demo runs in: a git repo with train.py, prepare.py, program.md, committed."""
    from autoresearch.gitops import GUARDED_FILES, Project

    project = Project(project_dir)  # a UserError for "not a git repository", a missing file, no commit
    status = project.repo.git.status("--porcelain=v1", "--untracked-files=all", "--", *GUARDED_FILES)
    for line in status.splitlines():
        name = line[3:].strip().strip('"')
        if line.startswith("??"):
            raise UserError(f"{name} is not committed; commit it before `autoresearch demo` "
                            "(the demo runs on a branch from your last commit)")
        raise UserError(f"{name} has uncommitted changes; commit or stash them before `autoresearch demo` "
                        "(the demo runs on a branch from your last commit)")


@contextlib.contextmanager
def _one_thread_per_process() -> Iterator[None]:
    """OMP_NUM_THREADS=1 for the training and evaluation subprocesses, unless the user set it."""
    if os.environ.get("OMP_NUM_THREADS"):
        yield
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def demo_config(project_dir: Path, data_dir: Path, tag: str, *, trials: int, budget: float) -> RunConfig:
    """The RunConfig of the demo: a real run's settings, shrunk (the environment does not apply)."""
    flags = {"tag": tag, "budget": budget, "agent": "offline", "device": "cpu", "data_dir": str(data_dir),
             "seq_len": DEMO_SEQ_LEN, "eval_tokens": DEMO_EVAL_TOKENS,
             "startup_allowance": DEMO_STARTUP_ALLOWANCE, "noise_runs": DEMO_NOISE_RUNS,
             "confirm_runs": DEMO_CONFIRM_RUNS,
             "max_trials": 1 + trials}  # the baseline counts; noise-floor runs do not
    config = load_config(flags, project_dir=project_dir, environ={})
    return dataclasses.replace(config, baseline_knobs=dict(DEMO_KNOBS), eval_timeout=DEMO_EVAL_TIMEOUT)


def _seconds(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


NEXT_STEPS = """\
[bold]That was a night in miniature.[/bold] A real one, on a GPU with Claude as the agent:

  autoresearch prepare                    [dim]# once: data and tokenizer[/dim]
  ANTHROPIC_API_KEY=sk-ant-... autoresearch run --hours 8
  autoresearch report                     [dim]# in the morning[/dim]
"""


def run_demo(project_dir: Path, *, trials: int = DEFAULT_TRIALS, budget: float = DEFAULT_BUDGET,
             console=None) -> int:
    """Prepare the sample data, run a short night in `project_dir`, report it; returns the exit code."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    if trials < 1:
        raise UserError(f"--trials must be at least 1 (got {trials})")
    if budget <= 0:
        raise UserError(f"--budget must be greater than 0 (got {budget:g})")
    project_dir = Path(project_dir).expanduser().resolve()
    check_project(project_dir)
    started = time.monotonic()

    from autoresearch.data.build import prepare_dataset

    console.print(f"[bold]autoresearch demo[/bold]: prepare the built-in sample corpus, train the baseline and "
                  f"{trials} proposal(s) for {budget:g} s each on the CPU with the offline agent, then report.")
    data_dir = prepare_dataset("sample", name=DEMO_DATASET, vocab_size=DEMO_VOCAB_SIZE)
    prepared = time.monotonic()

    from autoresearch.loop import run_night
    from autoresearch.view import make_view

    tag = demo_tag(project_dir)
    config = demo_config(project_dir, data_dir, tag, trials=trials, budget=budget)
    knobs = ", ".join(f"{name} = {value!r}" for name, value in DEMO_KNOBS.items())
    console.print(f"[dim]train.py shrunk for the CPU on the run's branch only: {escape(knobs)}; "
                  f"MAX_SEQ_LEN {config.seq_len}[/dim]")
    with _one_thread_per_process():
        view = make_view()
        try:
            outcome = run_night(config, view=view)
        finally:
            view.close()
    night_done = time.monotonic()

    from autoresearch.report import load_run

    summary = load_run(outcome.run_dir)
    try:
        from autoresearch.plot import save_progress_plot

        save_progress_plot(summary, summary.plot_path)
    except ImportError:
        summary.warnings.append("matplotlib is not installed, so there is no progress.png (pip install matplotlib)")
    from autoresearch import render

    console.print()
    render.render_report(summary, console)
    markdown = render.write_markdown(summary, plot=False)
    finished = time.monotonic()
    console.print()
    console.print(f"records: {outcome.run_dir}  ·  plot: {summary.plot_path.name}  ·  report: {markdown.name}")
    console.print(f"[dim]the demo took {_seconds(finished - started)}: prepare {_seconds(prepared - started)}, "
                  f"night {_seconds(night_done - prepared)}, report {_seconds(finished - night_done)}. "
                  f"Its branch is autoresearch/{tag}; the files of your checkout were not changed.[/dim]")
    console.print()
    console.print(NEXT_STEPS)
    return outcome.exit_code
