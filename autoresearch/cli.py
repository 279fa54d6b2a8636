"""The `autoresearch` command line: a thin typer layer over the harness modules.

Each command parses options and calls one function that knows nothing about the terminal.
A `UserError` from anywhere below becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from autoresearch import __version__
from autoresearch.errors import UserError

app = typer.Typer(
    name="autoresearch",
    help="Turn one GPU and a night of sleep into a night of research.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autoresearch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Turn one GPU and a night of sleep into a night of research."""


# --- prepare ------------------------------------------------------------------------------------
@app.command()
def prepare(
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", help="climbmix, tinystories, sample (built in, no network), or a directory / "
        "file / glob of .txt, .md, .jsonl or .parquet files.")] = "climbmix",
    name: Annotated[str | None, typer.Option(
        help="Name of the prepared dataset (default: the source's name).")] = None,
    num_shards: Annotated[int, typer.Option(help="climbmix: number of training shards to download.")] = 10,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size, including the 4 special tokens.")] = 8192,
    base_url: Annotated[str | None, typer.Option(
        help="Download host for Hugging Face datasets (a mirror).", envvar="AUTORESEARCH_BASE_URL")] = None,
    cache_dir: Annotated[str | None, typer.Option(
        help="Root of datasets and downloads [default: ~/.cache/autoresearch].",
        envvar="AUTORESEARCH_CACHE_DIR")] = None,
    tokenizer_chars: Annotated[int, typer.Option(
        help="Train the tokenizer on about this many characters of train text (as the reference).")] = 1_000_000_000,
    val_fraction: Annotated[float, typer.Option(
        help="Share of documents for val (sources without pinned splits).")] = 0.05,
    holdout_fraction: Annotated[float, typer.Option(
        help="Share of documents for holdout (sources without pinned splits).")] = 0.05,
    force: Annotated[bool, typer.Option(
        "--force", help="Rebuild even if an identical dataset exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the dataset's path.")] = False,
) -> None:
    """Download or read text, train the tokenizer, and write a prepared dataset (once)."""
    from autoresearch.data.build import prepare_dataset
    from autoresearch.data.layout import read_manifest

    directory = prepare_dataset(
        dataset, name=name, num_shards=num_shards, vocab_size=vocab_size, base_url=base_url, force=force,
        show_progress=not quiet, cache_dir=cache_dir, tokenizer_chars=tokenizer_chars,
        val_fraction=val_fraction, holdout_fraction=holdout_fraction)
    manifest = read_manifest(directory) or {}
    for split in () if quiet else ("train", "val", "holdout"):
        counts = manifest.get("splits", {}).get(split, {"documents": 0, "tokens": 0, "bytes": 0})
        typer.echo(f"{split}: {counts['documents']:,} documents, {counts['tokens']:,} tokens, "
                   f"{counts['bytes']:,} bytes", err=True)
    typer.echo(str(directory))


# --- run ----------------------------------------------------------------------------------------
@app.command()
def run(
    hours: Annotated[float | None, typer.Option(help="Stop starting trials after this many hours.")] = None,
    max_trials: Annotated[int | None, typer.Option(
        help="Stop after this many trials in the run (across resumes; the baseline counts, noise-floor runs do not).")] = None,
    tag: Annotated[str | None, typer.Option(
        help="Name of the run: branch autoresearch/<tag>, records in runs/<tag> (default: today's date; "
        "with --resume, the latest run).", show_default=False)] = None,
    budget: Annotated[float | None, typer.Option(
        help="Training seconds per trial (default: 300; env AUTORESEARCH_TIME_BUDGET).",
        show_default=False)] = None,
    agent: Annotated[str | None, typer.Option(
        help="auto (claude when ANTHROPIC_API_KEY is set, else offline), claude, openai, command, or offline "
        "(env AUTORESEARCH_AGENT; see `autoresearch agents`).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        help="The agent's model (env AUTORESEARCH_MODEL).", show_default=False)] = None,
    agent_command: Annotated[str | None, typer.Option(
        help="--agent command: the coding-agent CLI to run in the worktree, e.g. 'claude -p --permission-mode "
        "acceptEdits' (env AUTORESEARCH_AGENT_COMMAND).", show_default=False)] = None,
    agent_timeout: Annotated[float | None, typer.Option(
        help="--agent command: seconds one proposal may take before the CLI is killed (default: 1800).",
        show_default=False)] = None,
    device: Annotated[str | None, typer.Option(
        help="auto, cuda, cpu or mps (env AUTORESEARCH_DEVICE).", show_default=False)] = None,
    max_cost: Annotated[float | None, typer.Option(
        help="Stop once the agent has cost this many US dollars in the run.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue a run (the latest, or --tag) with its best and numbering.")] = False,
    dataset: Annotated[str | None, typer.Option(
        help="Prepared dataset to train on (default: climbmix; env AUTORESEARCH_DATASET).",
        show_default=False)] = None,
    data_dir: Annotated[str | None, typer.Option(
        help="Path of a prepared dataset (instead of --dataset) (env AUTORESEARCH_DATA_DIR).",
        show_default=False)] = None,
    min_delta: Annotated[float | None, typer.Option(
        help="Keep a trial only if val_bpb < best - min_delta (default: 0).", show_default=False)] = None,
    max_repairs: Annotated[int | None, typer.Option(
        help="Repair attempts the agent gets after a crash (default: 2).", show_default=False)] = None,
    seq_len: Annotated[int | None, typer.Option(
        help="Context length of training rows and of evaluation (default: 2048).", show_default=False)] = None,
    eval_tokens: Annotated[int | None, typer.Option(
        help="Validation tokens scored per trial (default: the evaluator's).", show_default=False)] = None,
    startup_allowance: Annotated[float | None, typer.Option(
        help="Seconds past the budget before training is killed (default: 600 for the baseline, then "
        "max(60, 3 x its cold start-up)).", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed given to train.py (default: 42).",
                                             show_default=False)] = None,
    noise_runs: Annotated[int | None, typer.Option(
        help="Extra seeds of the baseline at the start: the noise floor (default: 4; 0: none).",
        show_default=False)] = None,
    noise_sigmas: Annotated[float | None, typer.Option(
        help="Keep threshold = max(--min-delta, this x noise std) (default: 2).", show_default=False)] = None,
    confirm_runs: Annotated[int | None, typer.Option(
        help="Extra seeds a candidate keep is re-run with before it is kept (default: 1; 0: none).",
        show_default=False)] = None,
    quarantine_factor: Annotated[float | None, typer.Option(
        help="A gain above this x the largest kept gain (and above --quarantine-floor) must repeat under "
        "another seed (default: 10; 0: off).", show_default=False)] = None,
    quarantine_floor: Annotated[float | None, typer.Option(
        help="Gains (bpb) at or below this are never quarantined (default: 0.01).", show_default=False)] = None,
    overhead_tolerance: Annotated[float | None, typer.Option(
        help="Seconds of start-up beyond the reference (the baseline's cold or warm start-up) before a trial "
        "is rejected (default: from the measured start-up noise, at least 5).", show_default=False)] = None,
    require_isolation: Annotated[bool, typer.Option(
        "--require-isolation", help="Refuse to start unless the kernel sandbox (Landlock) is available.")] = False,
    holdout: Annotated[bool | None, typer.Option(
        "--holdout/--no-holdout", help="Score the baseline and the best on the holdout split when the run "
        "ends (default: on).", show_default=False)] = None,
    project_dir: Annotated[str | None, typer.Option(
        help="The project: a git checkout with train.py, prepare.py and program.md (default: .).",
        show_default=False)] = None,
) -> None:
    """Run the overnight loop: propose, train, score, keep or revert, record; until a limit or Ctrl-C."""
    from pathlib import Path

    from autoresearch.loop import run_night
    from autoresearch.runconfig import load_config
    from autoresearch.view import make_view

    flags = {"hours": hours, "max_trials": max_trials, "tag": tag, "budget": budget, "agent": agent,
             "model": model, "device": device, "max_cost": max_cost, "resume": resume or None,
             "dataset": dataset, "data_dir": data_dir, "min_delta": min_delta, "max_repairs": max_repairs,
             "seq_len": seq_len, "eval_tokens": eval_tokens, "startup_allowance": startup_allowance,
             "seed": seed, "noise_runs": noise_runs, "noise_sigmas": noise_sigmas, "confirm_runs": confirm_runs,
             "quarantine_factor": quarantine_factor, "quarantine_floor": quarantine_floor,
             "overhead_tolerance": overhead_tolerance, "holdout": holdout,
             "require_isolation": require_isolation or None}
    flags |= {"agent_command": agent_command, "agent_timeout": agent_timeout}
    config = load_config(flags, project_dir=Path(project_dir) if project_dir else None)
    view = make_view()
    try:
        outcome = run_night(config, view=view)
    finally:
        view.close()
    best = outcome.best
    score = "no score yet" if best.val_bpb is None else f"best val_bpb {best.val_bpb:.6f} (trial {best.trial})"
    typer.echo(f"run {outcome.tag} {outcome.status}: {outcome.stop_reason}; {score}; records in {outcome.run_dir}")
    if outcome.holdout:
        from autoresearch.holdout import format_table, rows_of

        typer.echo(format_table(rows_of(outcome.run_dir, outcome.holdout), outcome.holdout.get("flag")))
    raise typer.Exit(outcome.exit_code)


# --- agents -------------------------------------------------------------------------------------
@app.command()
def agents() -> None:
    """List the agents, what each needs, and how to check one with a dry proposal."""
    from autoresearch.agent.factory import AGENTS

    for info in AGENTS:
        typer.echo(f"{info.name}\n  {info.summary}\n  needs: {info.needs}\n  e.g.:  {info.setup}")
    typer.echo("\nCheck an agent without training: autoresearch propose --agent NAME [--model M] "
               "[--agent-command '...']\n(one proposal on a scratch copy; prints its description, diff and cost)")


@app.command()
def propose(
    agent: Annotated[str | None, typer.Option(
        help="claude, openai, command, offline or auto (env AUTORESEARCH_AGENT).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="The agent's model (env AUTORESEARCH_MODEL).",
                                              show_default=False)] = None,
    agent_command: Annotated[str | None, typer.Option(
        help="--agent command: the coding-agent CLI to run.", show_default=False)] = None,
    agent_timeout: Annotated[float | None, typer.Option(
        help="--agent command: seconds before the CLI is killed (default: 1800).", show_default=False)] = None,
    max_cost: Annotated[float | None, typer.Option(
        help="Check that --max-cost could be enforced for this agent and model.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run/--no-dry-run", help="Dry: nothing is trained, recorded or changed in the checkout (the only "
        "mode).")] = True,
    project_dir: Annotated[str | None, typer.Option(
        help="The project (default: .).", show_default=False)] = None,
) -> None:
    """Ask the agent for one proposal on a scratch copy of the project and print it: no training."""
    from pathlib import Path

    from autoresearch.agent.dry import dry_proposal
    from autoresearch.runconfig import load_config

    if not dry_run:
        raise UserError("autoresearch propose only makes dry proposals; `autoresearch run` trains them")
    flags = {"agent": agent, "model": model, "agent_command": agent_command, "agent_timeout": agent_timeout,
             "max_cost": max_cost}
    config = load_config(flags, project_dir=Path(project_dir) if project_dir else None)
    result = dry_proposal(config)
    usage = result.usage
    cost = f"${usage.cost_usd:.4f}" if usage.cost_known else "unknown"
    typer.echo(f"agent {result.agent}: {result.description}")
    typer.echo(result.diff or "(train.py is unchanged)")
    others = [name for name in result.changed_files if name != "train.py"]
    if others:
        typer.echo(f"it also changed {', '.join(others)}: a run would reject this proposal")
    typer.echo(f"tokens: {usage.input_tokens} in, {usage.output_tokens} out, {usage.cache_read_tokens} cache read, "
               f"{usage.cache_write_tokens} cache write; cost {cost}; nothing was trained or changed in the checkout")


# --- report -------------------------------------------------------------------------------------
REPORT_FORMATS = ("text", "md", "json")


@app.command()
def report(
    tag: Annotated[str | None, typer.Argument(
        help="A run's tag under --runs-dir, a run directory, or a results.tsv (default: the latest run).",
        show_default=False)] = None,
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where the runs live.")] = "runs",
    all_runs: Annotated[bool, typer.Option("--all", help="Compare every run under --runs-dir.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Add the cumulative diff of train.py, "
                                                      "baseline to best.")] = False,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text (rich in a terminal), md "
                                               "(writes report.md beside the run), or json.")] = "text",
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw progress.png beside the run.")] = True,
) -> None:
    """Summarize a run: trials, the best val_bpb, kept changes, failures, and where the time went."""
    import json
    from pathlib import Path

    from rich.console import Console

    from autoresearch import render
    from autoresearch import report as reports

    if output_format not in REPORT_FORMATS:
        raise UserError(f"--format {output_format!r} is not one of {', '.join(REPORT_FORMATS)}")
    if all_runs:
        loaded = reports.compare_runs(Path(runs_dir))
        if output_format == "json":
            rows = [reports.run_row(one) for one in loaded]
            typer.echo(json.dumps({"schema": reports.JSON_SCHEMA_VERSION, "runs": rows}, indent=2))
        elif output_format == "md":
            typer.echo(str(render.write_comparison_markdown(loaded, Path(runs_dir) / reports.MARKDOWN_FILE)))
        else:
            render.render_comparison(loaded, Console())
        return
    summary = reports.load_run(reports.find_run(Path(runs_dir), tag))
    if plot and summary.trials:
        try:
            from autoresearch.plot import save_progress_plot

            save_progress_plot(summary, summary.plot_path)
        except ImportError:
            summary.warnings.append("matplotlib is not installed, so there is no progress.png "
                                    "(pip install matplotlib)")
        except OSError as error:
            summary.warnings.append(f"could not write {summary.plot_path}: {error.strerror}")
    if output_format == "text":
        render.render_report(summary, Console(), diff=diff)
        return
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if output_format == "md":
        try:
            typer.echo(str(render.write_markdown(summary, diff=diff, plot=False)))
        except OSError as error:
            raise UserError(f"could not write {summary.markdown_path}: {error.strerror}") from error
    else:
        document = reports.to_json(summary)
        if diff:
            document["diff"] = reports.cumulative_diff(summary)
        typer.echo(json.dumps(document, indent=2))


# --- eval ---------------------------------------------------------------------------------------
@app.command(name="eval")
def eval_command(
    target: Annotated[str, typer.Argument(
        help="A run's tag (scores its baseline and best) or a commit (a prefix will do) of a trial whose "
        "weights were kept.", show_default=False)],
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where the runs live.")] = "runs",
    device: Annotated[str | None, typer.Option(
        help="auto, cuda, cpu or mps (default: the run's).", show_default=False)] = None,
) -> None:
    """Score on the hidden holdout split: val and holdout side by side, flagged when only val improved."""
    from pathlib import Path

    from autoresearch import holdout

    runs = Path(runs_dir)
    if device is not None and device not in ("auto", "cuda", "cpu", "mps"):
        raise UserError(f"--device: {device!r} is not one of auto, cuda, cpu, mps")
    if (runs / target / "run.json").is_file():
        summary = holdout.score_run(runs / target, device=device)
        if summary is None:
            raise UserError(f"run {target} has no scored baseline yet; nothing to evaluate")
        typer.echo(f"run {target}: baseline and best scored on the holdout split now (val_bpb from the records)")
        typer.echo(holdout.format_table(holdout.rows_of(runs / target, summary), summary.get("flag")))
        return
    if len(target) < 4 or any(char not in "0123456789abcdef" for char in target.lower()):
        raise UserError(f"{target!r} is neither a run under {runs}/ nor a commit; pass a run's tag or a commit")
    scored = holdout.score_commit(runs, target.lower(), device=device)
    typer.echo(f"commit {scored.commit[:7]}: trial {scored.trial} of run {scored.run}, scored on the holdout split now")
    typer.echo(holdout.format_table([scored]))


# --- demo ---------------------------------------------------------------------------------------
@app.command()
def demo(
    trials: Annotated[int | None, typer.Option(
        help="Proposals after the baseline and its noise-floor run (default: 6).", show_default=False)] = None,
    budget: Annotated[float | None, typer.Option(
        help="Training seconds per trial (default: 10).", show_default=False)] = None,
    project_dir: Annotated[str | None, typer.Option(
        help="The project: a git checkout with train.py, prepare.py and program.md (default: .).",
        show_default=False)] = None,
) -> None:
    """A real night in about three minutes on a CPU, no GPU or API key: prepare the sample, run, report."""
    from pathlib import Path

    from autoresearch.demo import run_demo

    options = {name: value for name, value in (("trials", trials), ("budget", budget)) if value is not None}
    raise typer.Exit(run_demo(Path(project_dir) if project_dir else Path.cwd(), **options))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning UserError into one line and an exit code."""
    try:
        code = app(args=argv, standalone_mode=False)
        # In non-standalone mode click returns (rather than raises) the exit code of an Abort
        # from Ctrl-C; an ignored return value would exit 0 after an interrupted command.
        if isinstance(code, int) and code:
            if code == 130:
                typer.echo("interrupted", err=True)
            sys.exit(code)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except typer.TyperException as error:  # usage errors: unknown option, bad value, ...
        show = getattr(error, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(error, "exit_code", 2))
