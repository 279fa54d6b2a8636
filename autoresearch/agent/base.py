"""What the loop gives a proposer and what it gets back.

`ProposalContext` goes in; a `Proposal` (description, `Usage`, transcript) comes out. A proposer
whose conversation fails or is interrupted after paid turns attaches what it had so far to the
exception (`attach_partial`), and the loop counts it (`absorb_partial`), so no paid token is lost
from a trial's record whatever ended it. A proposer may also offer `check()`: one cheap call that
proves the key, the endpoint and the model work, made before the baseline trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class HistoryRow:
    trial: int
    description: str
    val_bpb: float | None
    delta: float | None
    status: str


@dataclass
class ProposalContext:
    worktree: Path  # the run's worktree; train.py there is the current best, to be edited in place
    program_md: str  # read afresh for every trial
    prepare_py: str  # read-only for the agent
    best_train_py: str
    best_val_bpb: float | None
    history: list[HistoryRow]
    trial_number: int
    last_crash_tail: str | None = None  # traceback tail of the trial being repaired (or the last crash)
    repair_attempt: int = 0  # >0: fix the crash in the current train.py rather than propose anew
    rejection_notes: list[str] = field(default_factory=list)  # integrity reasons the agent must hear
    trial_dir: Path | None = None  # the current trial's records; its logs are viewable


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0  # the priced part; see cost_known
    cost_known: bool = True  # False once any tokens came from a model without prices (cost "unknown")

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd
        self.cost_known = self.cost_known and other.cost_known

    def as_tokens(self) -> dict[str, int]:
        return {"input": self.input_tokens, "output": self.output_tokens,
                "cache_read": self.cache_read_tokens, "cache_write": self.cache_write_tokens}


@dataclass
class Proposal:
    description: str  # one line: the first line of the agent's final message
    usage: Usage
    transcript: list[dict]  # JSON-serializable messages, saved as the trial's transcript


@dataclass
class PartialConversation:
    """What a conversation that raised had cost and said before it did."""

    usage: Usage
    transcript: list[dict]


_PARTIAL_ATTRIBUTE = "autoresearch_partial_conversation"


def attach_partial(error: BaseException, usage: Usage, transcript: list[dict]) -> None:
    """Attach the usage and transcript so far to an exception leaving `propose()` (its type is kept,
    so a UserError still stops the run and a KeyboardInterrupt still interrupts it)."""
    setattr(error, _PARTIAL_ATTRIBUTE, PartialConversation(usage, list(transcript)))


def absorb_partial(error: BaseException, usage: Usage, transcript: list[dict]) -> None:
    """Add what a failed conversation had cost and said (if its proposer attached it) to the trial's."""
    partial = getattr(error, _PARTIAL_ATTRIBUTE, None)
    if isinstance(partial, PartialConversation):
        usage.add(partial.usage)
        transcript.extend(partial.transcript)


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext) -> Proposal:
        """Edit context.worktree / 'train.py' in place and describe the experiment."""
        ...
