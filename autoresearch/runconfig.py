"""The settings of `autoresearch run`, merged in one place: pyproject.toml < environment < flags.

`[tool.autoresearch]` in the project's `pyproject.toml` sets defaults for a project; a few
environment variables (AUTORESEARCH_MODEL, AUTORESEARCH_DATASET, AUTORESEARCH_DATA_DIR,
AUTORESEARCH_DEVICE, AUTORESEARCH_AGENT, AUTORESEARCH_TIME_BUDGET) override those; command-line
flags override everything. Every value is checked here, and a bad one is a UserError naming where
it came from, so the loop only ever sees a complete, valid `RunConfig`.

The trust settings (noise_runs, noise_sigmas, confirm_runs, quarantine_factor, quarantine_floor,
overhead_tolerance, holdout) are explained in trust.py and decide.py; `[tool.autoresearch]` may set
them too (`noise-runs = 4`).

This module does not check that the dataset or the project exist (gitops and the loop do), and a
resumed run takes its settings from the flags given now, not from the run's first start.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoresearch import contract
from autoresearch.errors import UserError

AGENTS = ("auto", "claude", "openai", "command", "offline")
DEVICES = ("auto", "cuda", "cpu", "mps")
_TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Environment variables that stand in for a flag (the flag's name -> the variable).
ENVIRONMENT = {
    "model": "AUTORESEARCH_MODEL",
    "dataset": contract.ENV_DATASET,
    "data_dir": contract.ENV_DATA_DIR,
    "device": contract.ENV_DEVICE,
    "agent": "AUTORESEARCH_AGENT",
    "agent_command": "AUTORESEARCH_AGENT_COMMAND",
    "budget": contract.ENV_TIME_BUDGET,
}


@dataclass
class RunConfig:
    project_dir: Path
    tag: str
    budget: float = contract.DEFAULT_TIME_BUDGET  # seconds of training per trial
    hours: float | None = None  # stop starting trials after this long (None: no limit)
    max_trials: int | None = None  # trials in the run, across resumes
    max_cost: float | None = None  # US dollars of agent usage in the run, across resumes
    agent: str = "auto"
    model: str | None = None
    agent_command: str | None = None  # --agent command: the coding-agent CLI, run with sh -c in the worktree
    agent_timeout: float = 1800.0  # seconds one proposal of --agent command may take before it is killed
    agent_env: str | None = None  # --agent command: extra environment variables it may see, comma-separated
    price_input: float | None = None  # USD per million tokens, for a model the price table lacks
    price_output: float | None = None
    price_cache_read: float | None = None
    price_cache_write: float | None = None
    device: str = "auto"
    dataset: str | None = None
    data_dir: Path | None = None  # resolved from `dataset` when not given
    seq_len: int = contract.DEFAULT_MAX_SEQ_LEN
    eval_tokens: int | None = None  # None: the evaluator's default
    min_delta: float = 0.0  # keep only when val_bpb < best - min_delta
    max_repairs: int = 2  # repair attempts after a crash
    resume: bool = False
    startup_allowance: float | None = None  # seconds past the budget before training is killed (None: trust.py's rule)
    eval_timeout: float = 600.0
    seed: int = 42
    proposal_retries: int = 2  # extra tries when a proposal is invalid
    kill_grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    noise_runs: int = 4  # extra seeds of the baseline at the start of a run: the noise floor (0: none)
    noise_sigmas: float = 2.0  # keep threshold = max(min_delta, noise_sigmas x noise std)
    confirm_runs: int = 1  # extra seeds a candidate keep is trained with before it is kept (0: none)
    quarantine_factor: float = 10.0  # a gain above this x the largest kept gain so far ...
    quarantine_floor: float = 0.01  # ... and above this (bpb) must repeat under another seed (factor 0: off)
    overhead_tolerance: float | None = None  # seconds of start-up beyond the reference (None: from its measured noise)
    require_isolation: bool = False  # refuse to start without the kernel sandbox (sandbox.py)
    holdout: bool = True  # score the baseline and the best on the holdout split when the run ends
    baseline_knobs: dict = field(default_factory=dict)  # knob values committed before the baseline (the demo)
    guard_package: bool = True  # fingerprint the autoresearch package around trials (off only in tests
    #                             that run while the package itself is being edited)

    @property
    def wall_limit(self) -> float:
        from autoresearch.trust import startup_allowance

        return self.budget + startup_allowance(self.startup_allowance, None)

    def summary(self) -> dict:
        """The settings recorded in run.json."""
        keys = ("budget", "hours", "max_trials", "max_cost", "agent", "model", "agent_command", "agent_timeout",
                "device", "dataset", "data_dir",
                "seq_len", "eval_tokens", "min_delta", "max_repairs", "startup_allowance", "seed", "baseline_knobs",
                "noise_runs", "noise_sigmas", "confirm_runs", "quarantine_factor", "quarantine_floor",
                "overhead_tolerance", "holdout", "require_isolation")
        values = asdict(self)
        return {key: (str(values[key]) if isinstance(values[key], Path) else values[key]) for key in keys}


_FLOATS = {"budget", "hours", "max_cost", "min_delta", "startup_allowance", "eval_timeout", "kill_grace",
           "noise_sigmas", "quarantine_factor", "quarantine_floor", "overhead_tolerance", "agent_timeout",
           "price_input", "price_output", "price_cache_read", "price_cache_write"}
_INTS = {"max_trials", "seq_len", "eval_tokens", "max_repairs", "seed", "proposal_retries", "noise_runs",
         "confirm_runs"}
_STRINGS = {"tag", "agent", "model", "device", "dataset", "agent_command", "agent_env"}
_PATHS = {"data_dir"}
_BOOLS = {"holdout", "require_isolation"}
SETTABLE = _FLOATS | _INTS | _STRINGS | _PATHS | _BOOLS


def _pyproject_settings(project_dir: Path) -> dict:
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli is a dependency there (pyproject.toml)
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise UserError(f"{path} cannot be read for [tool.autoresearch]: this Python has no tomllib; "
                            "`pip install tomli` (a dependency of autoresearch on Python 3.10)") from None
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} does not parse: {error}") from error
    section = document.get("tool", {}).get("autoresearch", {})
    if not isinstance(section, dict):
        raise UserError(f"{path}: [tool.autoresearch] must be a table")
    settings = {key.replace("-", "_"): value for key, value in section.items()}
    unknown = sorted(set(settings) - SETTABLE)
    if unknown:
        raise UserError(f"{path}: unknown setting {', '.join(unknown)} in [tool.autoresearch]")
    return {key: (value, f"{path} [tool.autoresearch] {key}") for key, value in settings.items()}


def _coerce(name: str, value: object, source: str) -> object:
    if value is None:
        return None
    try:
        if name in _FLOATS:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)  # type: ignore[arg-type]
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError
            return number
        if name in _INTS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)  # type: ignore[call-overload]
        if name in _PATHS:
            return Path(str(value)).expanduser()
        if name in _BOOLS:
            if isinstance(value, bool):
                return value
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            if str(value).strip().lower() not in words:
                raise ValueError
            return words[str(value).strip().lower()]
        return str(value)
    except (TypeError, ValueError):
        kind = "a number" if name in _FLOATS else "true or false" if name in _BOOLS else "a whole number"
        raise UserError(f"{source}: {value!r} is not {kind}") from None


def default_tag(today: _dt.date | None = None) -> str:
    return (today or _dt.date.today()).isoformat()


def load_config(flags: Mapping[str, object], *, project_dir: Path | None = None,
                environ: Mapping[str, str] | None = None) -> RunConfig:
    """Merge pyproject.toml < environment < flags (a flag left as None is not given) and check them."""
    environ = os.environ if environ is None else environ
    project_dir = Path(project_dir or flags.get("project_dir") or Path.cwd()).expanduser().resolve()
    merged: dict[str, tuple[object, str]] = dict(_pyproject_settings(project_dir))
    for name, variable in ENVIRONMENT.items():
        if environ.get(variable):
            merged[name] = (environ[variable], f"environment variable {variable}")
    for name, value in flags.items():
        if name == "project_dir" or value is None:
            continue
        if name not in SETTABLE and name != "resume":
            raise ValueError(f"load_config: unknown flag {name}")
        merged[name] = (value, f"--{name.replace('_', '-')}")
    if "data_dir" in merged and "dataset" in merged and merged["data_dir"][1].startswith("environment") \
            and not merged["dataset"][1].startswith("environment"):
        # An explicit dataset name beats a data directory inherited from the environment.
        del merged["data_dir"]

    values: dict[str, object] = {}
    for name, (value, source) in merged.items():
        values[name] = value if name == "resume" else _coerce(name, value, source)
    sources = {name: source for name, (_, source) in merged.items()}
    tag = values.pop("tag", None)
    if tag is None:
        tag = latest_run_tag(project_dir) if values.get("resume") else default_tag()
    config = RunConfig(project_dir=project_dir, tag=str(tag),
                       **{key: value for key, value in values.items() if value is not None})
    _check(config, sources)
    if config.data_dir is None and config.dataset and Path(config.dataset).expanduser().is_dir():
        config.data_dir = Path(config.dataset).expanduser()  # a path given as the dataset
    if config.data_dir is None:
        config.data_dir = contract.dataset_dir(config.dataset) if config.dataset else contract.dataset_dir()
    config.data_dir = Path(config.data_dir).expanduser().resolve()
    if config.dataset is None:
        config.dataset = config.data_dir.name
    _keep_measurement_settings(config, sources)
    return config


# Settings that change what a score means: a run's trials are only comparable under the same ones.
MEASUREMENT_SETTINGS = ("budget", "data_dir", "seq_len", "eval_tokens", "device", "seed")


def _keep_measurement_settings(config: RunConfig, sources: dict[str, str]) -> None:
    """Continuing a run (--resume or its --tag again) keeps the settings its scores were measured under.

    A setting not given now is taken from the run; one given with another value is an error, since a
    trial trained for 10 minutes cannot be compared with a baseline trained for 5.
    """
    from autoresearch import ledger

    recorded = ledger.recorded_settings(config.project_dir / "runs" / config.tag)
    for name in MEASUREMENT_SETTINGS:
        if name not in recorded:
            continue
        old, new = recorded[name], getattr(config, name)
        if name == "data_dir":
            old, new = (str(Path(old)) if old is not None else None), str(new)
        if old == new:
            continue
        given = sources.get(name) or (sources.get("dataset") if name == "data_dir" else None)
        if given:
            raise UserError(f"{given}: run {config.tag} was started with {name} = {old}; its scores are only "
                            f"comparable under the same setting (leave it out to continue, or start a new --tag)")
        setattr(config, name, Path(old) if name == "data_dir" and old is not None else old)
    if recorded.get("dataset") and "dataset" not in sources and "data_dir" not in sources:
        config.dataset = recorded["dataset"]


def _check(config: RunConfig, sources: dict[str, str]) -> None:
    def fail(name: str, what: str) -> None:
        raise UserError(f"{sources.get(name, '--' + name.replace('_', '-'))}: {what}")

    if not _TAG_PATTERN.match(config.tag) or ".." in config.tag or config.tag.endswith((".lock", ".")):
        fail("tag", f"{config.tag!r} is not a usable tag (letters, digits, '.', '_', '-'; at most 64)")
    positive = {"budget": config.budget, "hours": config.hours, "max_trials": config.max_trials,
                "seq_len": config.seq_len, "eval_tokens": config.eval_tokens,
                "startup_allowance": config.startup_allowance, "eval_timeout": config.eval_timeout,
                "agent_timeout": config.agent_timeout}
    for name, value in positive.items():
        if value is not None and value <= 0:
            fail(name, f"must be greater than 0 (got {value:g})")
    non_negative = {"max_cost": config.max_cost, "min_delta": config.min_delta, "max_repairs": config.max_repairs,
                    "proposal_retries": config.proposal_retries, "kill_grace": config.kill_grace,
                    "seed": config.seed, "noise_runs": config.noise_runs, "noise_sigmas": config.noise_sigmas,
                    "confirm_runs": config.confirm_runs, "quarantine_factor": config.quarantine_factor,
                    "quarantine_floor": config.quarantine_floor, "overhead_tolerance": config.overhead_tolerance,
                    "price_input": config.price_input, "price_output": config.price_output,
                    "price_cache_read": config.price_cache_read, "price_cache_write": config.price_cache_write}
    for name, value in non_negative.items():
        if value is not None and value < 0:
            fail(name, f"must not be negative (got {value:g})")
    if config.require_isolation:
        from autoresearch.sandbox import isolation_refusal

        refusal = isolation_refusal()
        if refusal:
            fail("require_isolation", refusal)
    if config.agent not in AGENTS:
        fail("agent", f"{config.agent!r} is not one of {', '.join(AGENTS)}")
    if config.agent == "command" and not (config.agent_command or "").strip():
        fail("agent", "--agent command needs --agent-command '...' (the coding-agent CLI to run; see "
                      "`autoresearch agents`)")
    if config.agent_command is not None and config.agent != "command":
        fail("agent_command", f"is only used with --agent command (the agent is {config.agent!r})")
    if (config.price_input is None) != (config.price_output is None):
        fail("price_input" if config.price_input is None else "price_output",
             "price-input and price-output are given together (USD per million tokens)")
    if config.device not in DEVICES:
        fail("device", f"{config.device!r} is not one of {', '.join(DEVICES)}")
    if config.dataset is not None and not config.dataset.strip():
        fail("dataset", "must not be empty")


def latest_run_tag(project_dir: Path) -> str:
    """The tag of the most recently updated run under runs/ (for `--resume` without `--tag`)."""
    runs = []
    for state_file in (project_dir / "runs").glob("*/run.json"):
        try:
            updated = json.loads(state_file.read_text()).get("updated_at") or ""
        except (OSError, ValueError):
            continue
        runs.append((updated, state_file.stat().st_mtime, state_file.parent.name))
    if not runs:
        raise UserError(f"--resume: there is no run under {project_dir / 'runs'} to resume")
    return max(runs)[2]
