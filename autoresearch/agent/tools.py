"""The tools every LLM proposer offers besides the editor: the trials table and research notes.

`ProposalTools(editor, context, notes_path)` runs a named tool call and returns a `ToolResult`;
`ToolConversation` is what both LLM proposers share around their API's conversation: the editor
and tools each proposal gets, and the usage of a failed conversation carried on its exception;
the Claude agent and the OpenAI-compatible agent both dispatch through it, so the same call does
the same thing whatever the API. `READ_HISTORY` and `RESEARCH_NOTES` describe the two tools once
(name, description, JSON schema); each agent wraps them in its API's tool format.

What this does not do: check who may call what (the editor confines writes to train.py), or lock
the notes file against a second process (one run has one writer).
"""

from __future__ import annotations

from pathlib import Path

from autoresearch.agent import prompts
from autoresearch.agent.base import Proposal, ProposalContext, Usage, attach_partial
from autoresearch.agent.editor import TOOL_NAME as EDITOR_TOOL_NAME
from autoresearch.agent.editor import ToolResult, TrainPyEditor
from autoresearch.agent.pricing import unpriced_note
from autoresearch.atomic import write_text_atomic

READ_HISTORY = {
    "name": "read_history",
    "description": "Return the full table of every trial so far in this run: trial number, description, "
                   "val_bpb, delta against the best before it, and status (keep/discard/crash/...).",
    "schema": {"type": "object", "properties": {}},
}
RESEARCH_NOTES = {
    "name": "research_notes",
    "description": "Notes that persist across trials of this run. action='read' returns them; "
                   "action='append' adds `text` (what you learned, ideas to try next) under this "
                   "trial's number.",
    "schema": {
        "type": "object",
        "properties": {"action": {"type": "string", "enum": ["read", "append"]},
                       "text": {"type": "string", "description": "what to append (for action='append')"}},
        "required": ["action"],
    },
}


class ProposalTools:
    """Runs one trial's tool calls: the editor, read_history and (when a notes file is set) research_notes."""

    def __init__(self, editor: TrainPyEditor, context: ProposalContext, notes_path: Path | None):
        self.editor = editor
        self.context = context
        self.notes_path = notes_path

    @property
    def names(self) -> list[str]:
        names = [EDITOR_TOOL_NAME, READ_HISTORY["name"]]
        if self.notes_path is not None:
            names.append(RESEARCH_NOTES["name"])
        return names

    def extra_tools(self) -> list[dict]:
        """The non-editor tools on offer, as {name, description, schema}."""
        return [READ_HISTORY] + ([RESEARCH_NOTES] if self.notes_path is not None else [])

    def run(self, name: object, tool_input: object) -> ToolResult:
        if name == EDITOR_TOOL_NAME:
            return self.editor.execute(tool_input)
        if name == READ_HISTORY["name"]:
            return ToolResult(prompts.history_table(self.context.history))
        if name == RESEARCH_NOTES["name"] and self.notes_path is not None:
            return self._research_notes(tool_input)
        return ToolResult(f"Error: there is no tool named {name!r}; the tools are: {', '.join(self.names)}",
                          is_error=True)

    def _research_notes(self, tool_input: object) -> ToolResult:
        assert self.notes_path is not None
        action = tool_input.get("action") if isinstance(tool_input, dict) else None
        existing = self.notes_path.read_text(encoding="utf-8") if self.notes_path.exists() else ""
        if action == "read":
            return ToolResult(existing or "(no notes yet)")
        if action == "append":
            text = tool_input.get("text") if isinstance(tool_input, dict) else None
            if not isinstance(text, str) or not text.strip():
                return ToolResult("Error: action 'append' needs a non-empty 'text'", is_error=True)
            entry = f"## trial {self.context.trial_number}\n{text.strip()}\n\n"
            write_text_atomic(self.notes_path, existing + entry)
            return ToolResult("Appended to the research notes.")
        return ToolResult("Error: 'action' must be 'read' or 'append'", is_error=True)


class ToolConversation:
    """The frame of an LLM proposer: subclasses set `model`, `prices`, `notes_path`,
    `view_max_characters` and implement `_converse` for their API."""

    model: str
    prices: object | None  # None: the model is unpriced, its cost "unknown"
    notes_path: Path | None
    view_max_characters: int

    def cost_unknown_reason(self) -> str | None:
        return unpriced_note(self.model) if self.prices is None else None

    def propose(self, context: ProposalContext) -> Proposal:
        editor = TrainPyEditor(context.worktree, context.trial_dir, max_characters=self.view_max_characters,
                               program_md=context.program_md)
        tools = ProposalTools(editor, context, self.notes_path)
        usage = Usage()
        transcript: list[dict] = []
        try:
            return self._converse(context, editor, tools, usage, transcript)
        except BaseException as error:  # re-raised as it is, carrying what was paid for so far
            attach_partial(error, usage, transcript)
            raise

    def _converse(self, context: ProposalContext, editor: TrainPyEditor, tools: ProposalTools, usage: Usage,
                  transcript: list[dict]) -> Proposal:
        raise NotImplementedError
