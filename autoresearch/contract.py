"""The contract between the harness, `prepare.py` and `train.py`: environment variables and paths.

The harness owns the timer, the seed, the data and the evaluation; it tells `train.py` about them
only through these environment variables. `prepare.py` reads the same names (it is a standalone
file and repeats them as string literals; a test checks the two agree).

This module only names things. It does not enforce anything: enforcement lives in the runner and
the evaluator.
"""

from __future__ import annotations

import os
from pathlib import Path

# --- Environment variables ---------------------------------------------------------------------
ENV_CACHE_DIR = "AUTORESEARCH_CACHE_DIR"  # root of prepared datasets and downloads
ENV_DATASET = "AUTORESEARCH_DATASET"  # name of the prepared dataset to use
ENV_DATA_DIR = "AUTORESEARCH_DATA_DIR"  # full path to a prepared dataset (overrides the name)
ENV_BASE_URL = "AUTORESEARCH_BASE_URL"  # download host for Hugging Face datasets (mirrors, tests)
ENV_TIME_BUDGET = "AUTORESEARCH_TIME_BUDGET"  # training budget in seconds (default 300)
ENV_MAX_SEQ_LEN = "AUTORESEARCH_MAX_SEQ_LEN"  # context length of data rows and evaluation (default 2048)
ENV_SEED = "AUTORESEARCH_SEED"  # the seed the harness chose for this trial
ENV_DEVICE = "AUTORESEARCH_DEVICE"  # auto | cuda | cpu | mps
ENV_WEIGHTS_PATH = "AUTORESEARCH_WEIGHTS_PATH"  # where train.py saves its trained state_dict
ENV_TRAIN_ONLY = "AUTORESEARCH_TRAIN_ONLY"  # "1" under the harness: train.py must not evaluate itself
ENV_EVAL_TOKENS = "AUTORESEARCH_EVAL_TOKENS"  # validation tokens scored (default 40 * 524288)

DEFAULT_DATASET = "climbmix"
DEFAULT_TIME_BUDGET = 300.0
DEFAULT_MAX_SEQ_LEN = 2048
DEFAULT_EVAL_TOKENS = 40 * 524_288  # the reference's validation size

SPLITS = ("train", "val", "holdout")

# --- What train.py prints ----------------------------------------------------------------------
# Progress, one line per logged step (newline-terminated when stdout is not a terminal):
#   step 00012 (4.1%) | loss: 5.123456 | lrm: 1.00 | dt: 312ms | tok/sec: 1,234,567 | mfu: 39.8% | epoch: 1 | remaining: 287s
# and at the end the summary: a line `---`, then `key: value` lines (val_bpb, training_seconds,
# total_seconds, peak_vram_mb, mfu_percent, total_tokens_M, num_steps, num_params_M, depth).
PROGRESS_PATTERN = (
    r"step (?P<step>\d+) \((?P<percent>[\d.]+)%\) \| loss: (?P<loss>[-\d.naif]+)"
    r".*?remaining: (?P<remaining>[\d.]+)s"
)


def cache_dir() -> Path:
    """Where datasets and downloads live: $AUTORESEARCH_CACHE_DIR or ~/.cache/autoresearch."""
    configured = os.environ.get(ENV_CACHE_DIR)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "autoresearch"


def datasets_dir() -> Path:
    return cache_dir() / "datasets"


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def dataset_dir(name: str | None = None) -> Path:
    """The directory of a prepared dataset, by name (default: $AUTORESEARCH_DATASET or climbmix).

    $AUTORESEARCH_DATA_DIR, when set and no name is given, wins over everything.
    """
    if name is None:
        explicit = os.environ.get(ENV_DATA_DIR)
        if explicit:
            return Path(explicit).expanduser()
        name = os.environ.get(ENV_DATASET) or DEFAULT_DATASET
    return datasets_dir() / name
