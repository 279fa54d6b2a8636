"""The built-in Claude agent: a tool-use conversation over the Messages API that edits train.py.

`ClaudeProposer.propose(context)` briefs the model (rules and `prepare.py` in the cached system
prompt; `program.md`, the trials table, crash and rejection notes and the current `train.py` in
the first message), then loops: stream a response, run its tool calls (the text editor through
`TrainPyEditor`, `read_history`, optionally `research_notes`), send the results back, until the
model answers without tools. The first line of that answer is the trial's description. Requests
are streamed and wrapped in `retry.call_with_retries`, so rate limits, overload, dropped or
broken streams and time-outs are waited out rather than ending the night; a bad key or an
unknown model is a `UserError` at once; a conversation that outgrows the context window ends
early with train.py as it stands. Token usage and an estimated cost (pricing.py) are
summed over every response, and the whole conversation is returned as the trial's transcript.

What this does not protect against: a model that edits train.py into something that runs but
cheats (the harness's validation and its own evaluation exist for that), a model that talks for
all of `max_turns` without editing (the proposal then ends with whatever train.py holds), and
usage of attempts that failed mid-stream (not counted).
"""

from __future__ import annotations

import os
from pathlib import Path

import anthropic

from autoresearch.agent import prompts
from autoresearch.agent.base import Proposal, ProposalContext, Usage
from autoresearch.agent.editor import TOOL_NAME as EDITOR_TOOL_NAME
from autoresearch.agent.editor import ToolResult, TrainPyEditor
from autoresearch.agent.pricing import cost_usd, price_for
from autoresearch.agent.retry import (
    ContextTooLongError,
    Fault,
    IncompleteStreamError,
    RetryPolicy,
    call_with_retries,
)
from autoresearch.atomic import write_text_atomic

# Sonnet-class default: "Claude Sonnet 5.5 (Latest)" on platform.claude.com/docs/en/models/overview.
DEFAULT_MODEL = "claude-sonnet-5-5"
ENV_MODEL = "AUTORESEARCH_MODEL"

# Stable prefixes (rules + prepare.py, program.md) are cached for an hour: trials are minutes apart.
CACHE_1H = {"type": "ephemeral", "ttl": "1h"}
# The moving breakpoint on the newest message caches the conversation between turns of one trial.
CACHE_5M = {"type": "ephemeral", "ttl": "5m"}

DEFAULT_REQUEST_TIMEOUT = 600.0  # seconds
DESCRIPTION_MAX_CHARS = 120
NO_DESCRIPTION = "(the agent gave no description)"

READ_HISTORY_TOOL = {
    "name": "read_history",
    "description": "Return the full table of every trial so far in this run: trial number, description, "
                   "val_bpb, delta against the best before it, and status (keep/discard/crash/...).",
    "input_schema": {"type": "object", "properties": {}},
}
RESEARCH_NOTES_TOOL = {
    "name": "research_notes",
    "description": "Notes that persist across trials of this run. action='read' returns them; "
                   "action='append' adds `text` (what you learned, ideas to try next) under this "
                   "trial's number.",
    "input_schema": {
        "type": "object",
        "properties": {"action": {"type": "string", "enum": ["read", "append"]},
                       "text": {"type": "string", "description": "what to append (for action='append')"}},
        "required": ["action"],
    },
}


def default_model() -> str:
    return os.environ.get(ENV_MODEL) or DEFAULT_MODEL


def describe(text: str) -> str | None:
    """The first non-empty line of a final message, stripped of markdown and cut to one short line."""
    for line in text.splitlines():
        line = line.strip().lstrip("#>*-` ").strip()
        line = line.replace("**", "").replace("`", "").strip()
        if not line:
            continue
        if len(line) > DESCRIPTION_MAX_CHARS:
            line = line[: DESCRIPTION_MAX_CHARS - 3].rstrip() + "..."
        return line
    return None


def _block_dict(block: object) -> dict:
    """A response content block as the plain dict we send back and record (thinking blocks intact)."""
    return block.model_dump(mode="json", exclude_none=True)  # type: ignore[attr-defined]


def _with_breakpoint(messages: list[dict]) -> list[dict]:
    """A copy of the conversation with the moving cache breakpoint on the newest block."""
    prepared = list(messages)
    last = prepared[-1]
    content = [dict(block) for block in last["content"]]
    content[-1]["cache_control"] = CACHE_5M
    prepared[-1] = {**last, "content": content}
    return prepared


class ClaudeProposer:
    """Proposes each experiment by letting Claude edit train.py through the text editor tool."""

    name = "claude"

    def __init__(self, model: str | None = None, client: anthropic.Anthropic | None = None,
                 max_turns: int = 30, *, max_tokens: int = 32000, retry: RetryPolicy | None = None,
                 request_timeout: float | None = None, notes_path: Path | None = None,
                 view_max_characters: int | None = 100_000):
        self.model = model or default_model()  # --model, else $AUTORESEARCH_MODEL, else DEFAULT_MODEL
        # Retries are ours (retry.py): the SDK's two quick ones would only shorten our back-off.
        # request_timeout bounds connecting and each wait for the next streamed bytes.
        if client is None:
            client = anthropic.Anthropic(max_retries=0, timeout=request_timeout or DEFAULT_REQUEST_TIMEOUT)
        elif request_timeout is not None:
            client = client.with_options(max_retries=0, timeout=request_timeout)
        else:
            client = client.with_options(max_retries=0)
        self.client = client
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.retry = retry or RetryPolicy()
        self.notes_path = Path(notes_path) if notes_path is not None else None
        self.view_max_characters = view_max_characters

    # --- the conversation ---------------------------------------------------------------------

    def propose(self, context: ProposalContext) -> Proposal:
        editor = TrainPyEditor(context.worktree, context.trial_dir, max_characters=self.view_max_characters)
        start_text = editor.train_py.read_text(encoding="utf-8")
        usage = Usage()
        tools = self._tools(editor)
        system = prompts.system_blocks(context.prepare_py, CACHE_1H)
        messages: list[dict] = [{"role": "user",
                                 "content": prompts.briefing_blocks(context, start_text, CACHE_1H)}]
        transcript: list[dict] = [{"role": "system", "model": self.model, "content": system,
                                   "tools": [tool["name"] for tool in tools]}, messages[0]]
        _, price_note = price_for(self.model)
        if price_note:
            transcript.append({"role": "harness", "event": "note", "text": price_note})

        last_text: str | None = None
        nudged = False
        finished = False
        for turn in range(self.max_turns):
            try:
                message = self._stream(system, tools, messages, transcript)
            except ContextTooLongError as error:
                if turn == 0:
                    raise  # the briefing alone does not fit: the user has to shorten something
                transcript.append({"role": "harness", "event": "context_full", "text": str(error)})
                finished = True
                break
            turn_usage = self._usage_of(message)
            usage.add(turn_usage)
            content = [_block_dict(block) for block in message.content]
            messages.append({"role": "assistant", "content": content})
            transcript.append({"role": "assistant", "content": content, "stop_reason": message.stop_reason,
                               "usage": {**turn_usage.as_tokens(), "cost_usd": turn_usage.cost_usd}})
            text = "\n".join(block["text"] for block in content if block.get("type") == "text")
            if text.strip():
                last_text = text

            tool_calls = [block for block in content if block.get("type") == "tool_use"]
            if tool_calls:
                cut_short = message.stop_reason == "max_tokens"
                results = [self._tool_result(call, editor, context,
                                             truncated=cut_short and call is tool_calls[-1])
                           for call in tool_calls]
                messages.append({"role": "user", "content": results})
                transcript.append(messages[-1])
                continue
            unchanged = editor.train_py.read_text(encoding="utf-8") == start_text
            if unchanged and not nudged and message.stop_reason != "refusal":
                nudged = True
                nudge = {"type": "text", "text": prompts.UNCHANGED_NUDGE}
                messages.append({"role": "user", "content": [nudge]})
                transcript.append(messages[-1])
                continue
            finished = True
            break
        if not finished:
            transcript.append({"role": "harness", "event": "max_turns",
                               "text": f"stopped after {self.max_turns} turns; train.py is used as is"})
        description = describe(last_text or "") or NO_DESCRIPTION
        return Proposal(description=description, usage=usage, transcript=transcript)

    def _stream(self, system: list[dict], tools: list[dict], messages: list[dict],
                transcript: list[dict]) -> anthropic.types.Message:
        request = {"model": self.model, "max_tokens": self.max_tokens, "system": system, "tools": tools,
                   "messages": _with_breakpoint(messages)}

        def attempt() -> anthropic.types.Message:
            with self.client.messages.stream(**request) as stream:
                message = stream.get_final_message()
            if message.stop_reason is None:
                raise IncompleteStreamError("the stream ended before the message was complete")
            return message

        def record_retry(failures: int, delay: float, fault: Fault) -> None:
            transcript.append({"role": "harness", "event": "retry", "attempt": failures + 1,
                               "delay_s": round(delay, 3), "error": fault.summary})

        return call_with_retries(attempt, self.retry, model=self.model, on_retry=record_retry)

    def _usage_of(self, message: anthropic.types.Message) -> Usage:
        raw = message.usage
        cache_read = raw.cache_read_input_tokens or 0
        cache_write = raw.cache_creation_input_tokens or 0
        split = raw.cache_creation
        if split is not None:
            write_1h, write_5m = split.ephemeral_1h_input_tokens, split.ephemeral_5m_input_tokens
            cache_write = max(cache_write, write_1h + write_5m)
        else:  # no breakdown: price it all at the dearer 1-hour rate
            write_1h, write_5m = cache_write, 0
        cost = cost_usd(self.model, input_tokens=raw.input_tokens, output_tokens=raw.output_tokens,
                        cache_read_tokens=cache_read, cache_write_5m_tokens=write_5m,
                        cache_write_1h_tokens=write_1h)
        return Usage(input_tokens=raw.input_tokens, output_tokens=raw.output_tokens,
                     cache_read_tokens=cache_read, cache_write_tokens=cache_write, cost_usd=cost)

    # --- tools --------------------------------------------------------------------------------

    def _tools(self, editor: TrainPyEditor) -> list[dict]:
        tools = [editor.tool_definition(), READ_HISTORY_TOOL]
        if self.notes_path is not None:
            tools.append(RESEARCH_NOTES_TOOL)
        return tools

    def _tool_result(self, call: dict, editor: TrainPyEditor, context: ProposalContext,
                     truncated: bool) -> dict:
        if truncated:
            result = ToolResult("Error: your response hit the output token limit in the middle of this tool "
                                "call, so it was not executed. Make the call again, shorter.", is_error=True)
        else:
            result = self._run_tool(call.get("name"), call.get("input"), editor, context)
        block = {"type": "tool_result", "tool_use_id": call["id"], "content": result.content}
        if result.is_error:
            block["is_error"] = True
        return block

    def _run_tool(self, name: object, tool_input: object, editor: TrainPyEditor,
                  context: ProposalContext) -> ToolResult:
        if name == EDITOR_TOOL_NAME:
            return editor.execute(tool_input)
        if name == READ_HISTORY_TOOL["name"]:
            return ToolResult(prompts.history_table(context.history))
        if name == RESEARCH_NOTES_TOOL["name"] and self.notes_path is not None:
            return self._research_notes(tool_input, context)
        available = ", ".join(tool["name"] for tool in self._tools(editor))
        return ToolResult(f"Error: there is no tool named {name!r}; the tools are: {available}",
                          is_error=True)

    def _research_notes(self, tool_input: object, context: ProposalContext) -> ToolResult:
        assert self.notes_path is not None
        action = tool_input.get("action") if isinstance(tool_input, dict) else None
        existing = self.notes_path.read_text(encoding="utf-8") if self.notes_path.exists() else ""
        if action == "read":
            return ToolResult(existing or "(no notes yet)")
        if action == "append":
            text = tool_input.get("text") if isinstance(tool_input, dict) else None
            if not isinstance(text, str) or not text.strip():
                return ToolResult("Error: action 'append' needs a non-empty 'text'", is_error=True)
            entry = f"## trial {context.trial_number}\n{text.strip()}\n\n"
            write_text_atomic(self.notes_path, existing + entry)
            return ToolResult("Appended to the research notes.")
        return ToolResult("Error: 'action' must be 'read' or 'append'", is_error=True)
