"""The words the proposers send: fixed rules, the per-trial briefing, and the nudges.

The Claude and OpenAI-compatible agents send `system_blocks` and `briefing_blocks`; a coding-agent
CLI (`--agent command`) gets one document, `command_briefing`, with the same rules, its own words
for the tools, and the same trials table, notes and task.

Layout follows the prompt cache. The system prompt (rules, then `prepare.py`) is the same for
every trial of a run and carries a 1-hour cache breakpoint; the first user message puts
`program.md` first (it changes only when the human edits it, so it gets the second 1-hour
breakpoint), then what changes every trial: the trials table, crash and rejection notes, and
the current `train.py` with the task.

What this does not do: enforce any rule it states. The harness validates the edit, runs its own
evaluation and rejects tampering whatever the model was told.
"""

from __future__ import annotations

from autoresearch.agent.base import HistoryRow, ProposalContext

MAX_TABLE_ROWS = 60  # rows of the trials table inlined; read_history returns them all
CRASH_TAIL_CHARS = 4000

RULES = """\
You are an ML research agent running an overnight loop of experiments on a small language model.
Each trial, you edit `train.py`; the harness then trains it for a fixed wall-clock budget, scores
validation bits per byte (val_bpb, lower is better) with its own evaluator, keeps the change if
val_bpb improved and reverts it otherwise. Then the next trial starts from the best train.py.

Rules:
- Edit only `train.py`, with the str_replace_based_edit_tool. `prepare.py` (constants, tokenizer,
  dataloader) is fixed: you may view it, not change it. Other files are off limits.
- Make ONE focused experiment per trial: a change whose effect the val_bpb tells you about.
  Small, well-motivated changes beat sweeping rewrites; a crash wastes a whole trial.
- Do not touch the evaluation, the time budget, the data, or how results are reported: the harness
  measures everything itself and rejects any trial that tries to.
- train.py must still run as `python train.py`, use only packages that are already installed,
  and finish within the time budget on the GPU it is given.
- Learn from the table of previous trials: do not repeat an experiment that was already tried
  unless you change something that matters.
- When the edit is done, stop calling tools and reply with a final message. Its FIRST LINE is a
  one-line description of the experiment (under 100 characters, e.g.
  "MATRIX_LR 0.04 -> 0.06: faster Muon learning rate"); a short rationale may follow.

Tools:
- str_replace_based_edit_tool: view / str_replace / create / insert. Paths: `train.py`,
  `prepare.py`, `program.md`, `README.md`; the current trial's records as `trial/<name>`
  (e.g. `trial/train.log`) when there are any. str_replace needs old_str to match exactly once.
- read_history: the full table of every trial so far.
- research_notes (when available): read or append to notes that persist across trials.
"""

REPAIR_TASK = """\
The previous attempt at this trial crashed (repair attempt {attempt}). Fix the crash in the
current train.py below, keeping the experiment's intent if you can; if the idea itself cannot
work, revert to something close to it that will run. The traceback tail:

```
{tail}
```
"""

FRESH_TASK = """\
Propose the next experiment for trial {trial}: edit train.py with the editor tool, then reply
with the one-line description as the first line of your final message.
"""

UNCHANGED_NUDGE = ("train.py is unchanged: nothing was edited yet. Make the edit with "
                   "str_replace_based_edit_tool now, then reply with the one-line description.")


def system_blocks(prepare_py: str, cache_control: dict) -> list[dict]:
    """The fixed prefix: rules, then prepare.py; the breakpoint on the last block caches both."""
    return [
        {"type": "text", "text": RULES},
        {"type": "text", "cache_control": cache_control,
         "text": f"prepare.py (read-only, imported by train.py):\n```python\n{prepare_py}\n```"},
    ]


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.6f}" if signed else f"{value:.6f}"


def history_table(history: list[HistoryRow], limit: int | None = None) -> str:
    if not history:
        return "(no trials yet)"
    rows = history
    skipped = 0
    if limit is not None and len(history) > limit:
        rows = [history[0], *history[-(limit - 1):]]
        skipped = len(history) - len(rows)
    lines = ["trial | description | val_bpb | delta | status", "--- | --- | --- | --- | ---"]
    for index, row in enumerate(rows):
        if skipped and index == 1:
            lines.append(f"... | ({skipped} earlier trials: call read_history for all) | | |")
        description = " ".join(row.description.split()).replace("|", "/")
        lines.append(f"{row.trial} | {description} | {_number(row.val_bpb)} | "
                     f"{_number(row.delta, signed=True)} | {row.status}")
    return "\n".join(lines)


def briefing_blocks(context: ProposalContext, current_train_py: str, cache_control: dict) -> list[dict]:
    """The first user message: program.md (cached), then this trial's variable parts."""
    best = _number(context.best_val_bpb)
    situation = [f"Trials so far (best val_bpb: {best}; delta is against the best before that trial):",
                 history_table(context.history, MAX_TABLE_ROWS)]
    if context.rejection_notes:
        situation.append("The harness rejected recent edits for these reasons; do not repeat them:")
        situation.extend(f"- {note}" for note in context.rejection_notes)
    if context.last_crash_tail and context.repair_attempt == 0:
        tail = context.last_crash_tail[-CRASH_TAIL_CHARS:]
        situation.append(f"The last crash ended with:\n```\n{tail}\n```")
    if context.repair_attempt > 0:
        tail = (context.last_crash_tail or "(no traceback captured)")[-CRASH_TAIL_CHARS:]
        task = REPAIR_TASK.format(attempt=context.repair_attempt, tail=tail)
        label = "Current train.py (the version that crashed):"
    else:
        task = FRESH_TASK.format(trial=context.trial_number)
        label = "Current train.py (the best so far; edit it in place):"
    return [
        {"type": "text", "text": f"program.md (the researcher's instructions):\n\n{context.program_md}",
         "cache_control": cache_control},
        {"type": "text", "text": "\n\n".join(situation)},
        {"type": "text", "text": f"{label}\n```python\n{current_train_py.rstrip()}\n```\n\n{task}"},
    ]


COMMAND_TOOLS = """\
How you work here:
- You run in the run's git worktree; edit `train.py` there with your own file tools. Do not edit,
  create or delete any other file, do not run `git commit` or any other git command that changes
  the repository, and do not run training: the harness does all of that after you finish.
- When the edit is done, end with a final message whose FIRST LINE is the one-line description
  (or write that line to the file named by $AUTORESEARCH_DESCRIPTION_FILE).
"""


def command_briefing(context: ProposalContext, current_train_py: str) -> str:
    """The whole briefing of a coding-agent CLI as one document (written to a file and to its stdin)."""
    rules = RULES.split("Tools:")[0].rstrip()
    parts = [rules, COMMAND_TOOLS,
             f"prepare.py (read-only, imported by train.py):\n```python\n{context.prepare_py}\n```"]
    parts += [block["text"] for block in briefing_blocks(context, current_train_py, {})]
    return "\n\n".join(parts) + "\n"
