"""The built-in Claude agent: a tool-use conversation over the Messages API that edits train.py.

`ClaudeProposer.propose(context)` briefs the model (rules and `prepare.py` in the cached system
prompt; `program.md`, the trials table, crash and rejection notes and the current `train.py` in
the first message), then loops: stream a response, run its tool calls (the text editor through
`TrainPyEditor`, `read_history`, optionally `research_notes`; tools.py), send the results back,
until the model answers without tools. The first line of that answer is the trial's
description. Requests are streamed and wrapped in `retry.call_with_retries`, so rate limits,
overload, dropped, broken or malformed streams and time-outs are waited out rather than ending
the night; a bad key or an unknown model is a `UserError` at once; a conversation that outgrows
the context window ends early with train.py as it stands. Token usage and an estimated cost
(pricing.py; "unknown" for an unpriced model) are summed over every response, and the whole
conversation is returned as the trial's transcript. A conversation that raises after paid turns
carries its usage and transcript on the exception (`base.attach_partial`). `check()` is the
fail-fast call made before the baseline: a free token count that proves key, endpoint and model.

What this does not protect against: a model that edits train.py into something that runs but
cheats (the harness's validation and its own evaluation exist for that), a model that talks for
all of `max_turns` without editing (the proposal then ends with whatever train.py holds), and
usage of attempts that failed mid-stream (the API reports none for them).
"""

from __future__ import annotations

import os
from pathlib import Path

import anthropic

from autoresearch.agent import prompts
from autoresearch.agent.base import Proposal, ProposalContext, Usage
from autoresearch.agent.editor import ToolResult, TrainPyEditor
from autoresearch.agent.pricing import Prices, cost_usd, price_for, unpriced_note
from autoresearch.agent.retry import (
    ANTHROPIC,
    ContextTooLongError,
    Fault,
    IncompleteStreamError,
    RetryPolicy,
    call_with_retries,
    reading_stream,
    user_error_for,
)
from autoresearch.agent.tools import ProposalTools, ToolConversation
from autoresearch.errors import UserError

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

CHECK_TIMEOUT = 20.0  # seconds for the fail-fast call before the baseline


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


class ClaudeProposer(ToolConversation):
    """Proposes each experiment by letting Claude edit train.py through the text editor tool."""

    name = "claude"

    def __init__(self, model: str | None = None, client: anthropic.Anthropic | None = None,
                 max_turns: int = 30, *, max_tokens: int = 32000, retry: RetryPolicy | None = None,
                 request_timeout: float | None = None, notes_path: Path | None = None,
                 view_max_characters: int | None = 100_000, prices: Prices | None = None):
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
        self.prices = price_for(self.model, prices)  # None: unpriced, cost "unknown"

    # --- the conversation (ToolConversation.propose gives it the editor and tools) --------------

    def _converse(self, context: ProposalContext, editor: TrainPyEditor, tools: ProposalTools, usage: Usage,
                  transcript: list[dict]) -> Proposal:
        start_text = editor.train_py.read_text(encoding="utf-8")
        tool_specs = self._tools(editor, tools)
        system = prompts.system_blocks(context.prepare_py, CACHE_1H)
        messages: list[dict] = [{"role": "user",
                                 "content": prompts.briefing_blocks(context, start_text, CACHE_1H)}]
        transcript += [{"role": "system", "model": self.model, "content": system,
                        "tools": [tool["name"] for tool in tool_specs]}, messages[0]]
        if self.prices is None:
            transcript.append({"role": "harness", "event": "note", "text": unpriced_note(self.model)})

        last_text: str | None = None
        nudged = False
        finished = False
        for turn in range(self.max_turns):
            try:
                message = self._stream(system, tool_specs, messages, transcript)
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
                               "usage": {**turn_usage.as_tokens(),
                                         "cost_usd": turn_usage.cost_usd if turn_usage.cost_known else None}})
            text = "\n".join(block["text"] for block in content if block.get("type") == "text")
            if text.strip():
                last_text = text

            tool_calls = [block for block in content if block.get("type") == "tool_use"]
            if tool_calls:
                cut_short = message.stop_reason == "max_tokens"
                results = [self._tool_result(call, tools, truncated=cut_short and call is tool_calls[-1])
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

    def check(self) -> None:
        """Fail fast before the baseline: count the tokens of a one-word request (free) on this model.

        A 401, 403 or 404 is the usual one-line UserError; an unreachable endpoint or a server that
        keeps failing is one too, after one retry at most, since nobody is asleep yet. A gateway
        without the count endpoint (404 that does not name the model) is checked with a one-token
        message instead.
        """
        client = self.client.with_options(timeout=CHECK_TIMEOUT, max_retries=1)
        request = {"model": self.model, "messages": [{"role": "user", "content": "ping"}]}
        try:
            client.messages.count_tokens(**request)
        except anthropic.NotFoundError as error:
            if self.model not in str(error):
                self._check_with_a_message(client, request)
                return
            raise user_error_for(error, self.model, ANTHROPIC) from None
        except anthropic.APIStatusError as error:
            raise user_error_for(error, self.model, ANTHROPIC) from None
        except anthropic.APIConnectionError as error:
            raise UserError(f"cannot reach the Anthropic API at {client.base_url}: {error.__cause__ or error}; "
                            "check ANTHROPIC_BASE_URL and the network") from None

    def _check_with_a_message(self, client: anthropic.Anthropic, request: dict) -> None:
        try:
            client.messages.create(max_tokens=1, **request)
        except anthropic.APIStatusError as error:
            raise user_error_for(error, self.model, ANTHROPIC) from None
        except anthropic.APIConnectionError as error:
            raise UserError(f"cannot reach the Anthropic API at {client.base_url}: {error.__cause__ or error}; "
                            "check ANTHROPIC_BASE_URL and the network") from None

    def _stream(self, system: list[dict], tools: list[dict], messages: list[dict],
                transcript: list[dict]) -> anthropic.types.Message:
        request = {"model": self.model, "max_tokens": self.max_tokens, "system": system, "tools": tools,
                   "messages": _with_breakpoint(messages)}

        def attempt() -> anthropic.types.Message:
            with reading_stream(ANTHROPIC), self.client.messages.stream(**request) as stream:
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
        if self.prices is None:
            cost, known = 0.0, False
        else:
            cost, known = cost_usd(self.prices, input_tokens=raw.input_tokens, output_tokens=raw.output_tokens,
                                   cache_read_tokens=cache_read, cache_write_5m_tokens=write_5m,
                                   cache_write_1h_tokens=write_1h), True
        return Usage(input_tokens=raw.input_tokens, output_tokens=raw.output_tokens,
                     cache_read_tokens=cache_read, cache_write_tokens=cache_write, cost_usd=cost, cost_known=known)

    # --- tools --------------------------------------------------------------------------------

    def _tools(self, editor: TrainPyEditor, tools: ProposalTools) -> list[dict]:
        return [editor.tool_definition()] + [
            {"name": spec["name"], "description": spec["description"], "input_schema": spec["schema"]}
            for spec in tools.extra_tools()]

    @staticmethod
    def _tool_result(call: dict, tools: ProposalTools, truncated: bool) -> dict:
        if truncated:
            result = ToolResult("Error: your response hit the output token limit in the middle of this tool "
                                "call, so it was not executed. Make the call again, shorter.", is_error=True)
        else:
            result = tools.run(call.get("name"), call.get("input"))
        block = {"type": "tool_result", "tool_use_id": call["id"], "content": result.content}
        if result.is_error:
            block["is_error"] = True
        return block
