"""The evaluator's verdict: `EvalResult`, the kinds of failure it names, and the marker after which a failure is the model's.

Both sides of an evaluation use these names: the harness (evaluate.py starts the evaluator process
and reads its verdict; holdout.py and the loop call it) and the evaluator program itself
(scoring.py, which imports torch). They live here, with no import of either, so the two depend on
this module and never on each other. What this does NOT check: that a verdict read back from
JSON is consistent (a `bpb` on a failed verdict, an unknown `failure_kind`); `from_dict` fills
missing fields with None and trusts the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

STARTED_MODEL_MARKER = "autoresearch-evaluate: importing train.py"  # after it, failures are the model's
FAILURE_KINDS = ("causality", "tamper", "model_error", "weights_error", "timeout")


@dataclass
class EvalResult:
    ok: bool
    split: str
    bpb: float | None
    loss_nats: float | None
    tokens: int
    bytes: int
    causal_ok: bool | None
    failure_kind: str | None  # None when ok, else one of FAILURE_KINDS
    reason: str | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalResult:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


# What scores a trial: `evaluate.run_evaluator` or a stand-in with its signature (tests, benchmarks).
Evaluator = Callable[..., object]
