"""What the loop gives a proposer and what it gets back."""

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
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd

    def as_tokens(self) -> dict[str, int]:
        return {"input": self.input_tokens, "output": self.output_tokens,
                "cache_read": self.cache_read_tokens, "cache_write": self.cache_write_tokens}


@dataclass
class Proposal:
    description: str  # one line: the first line of the agent's final message
    usage: Usage
    transcript: list[dict]  # JSON-serializable messages, saved as the trial's transcript


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext) -> Proposal:
        """Edit context.worktree / 'train.py' in place and describe the experiment."""
        ...
