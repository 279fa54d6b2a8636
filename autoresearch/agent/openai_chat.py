"""The OpenAI-compatible agent: Chat Completions with function calling, streamed, that edits train.py.

`OpenAIProposer.propose(context)` holds the same conversation as the Claude agent (the same
rules, briefing, editor semantics through `TrainPyEditor`, `read_history` and `research_notes`
through tools.py), over any server that speaks OpenAI's Chat Completions: OpenAI itself, or
vLLM, Ollama, LM Studio, llama.cpp's server and OpenRouter by URL. The official `openai` package
reads `OPENAI_API_KEY` and `OPENAI_BASE_URL` as it always does; a base URL without a key sends a
placeholder key, since local servers usually want none. Tool calls arrive as streamed deltas
(id and name first, the JSON arguments split across chunks) and are assembled here; arguments
that are not JSON go back to the model as a tool error. Faults are waited out with the same
policy as the Claude agent (retry.py, `OPENAI` provider). `check()` is the fail-fast call before
the baseline: the server's model list, which proves the URL, the key and the model.

Usage comes from the stream's final usage chunk (`stream_options.include_usage`); cached prompt
tokens are priced at the cache-read rate, the rest of the prompt at the input rate (or the
cache-write rate, if one is configured and higher: Chat Completions does not report writes).

What this does not protect against: a server that ignores `include_usage` (its tokens are then
recorded as 0 and the transcript says so), a model that cannot call functions (it answers
without editing; the proposal is then rejected as unchanged), a server whose model list does not
need the key (the key is then first checked by the first proposal), and the limits of the
Claude agent's docstring (cheating edits, talk without edits, usage of failed attempts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai

from autoresearch.agent import prompts
from autoresearch.agent.base import Proposal, ProposalContext, Usage
from autoresearch.agent.claude import NO_DESCRIPTION, describe
from autoresearch.agent.editor import ToolResult, TrainPyEditor
from autoresearch.agent.pricing import Prices, price_for, unpriced_note
from autoresearch.agent.retry import (
    ContextTooLongError,
    Fault,
    IncompleteStreamError,
    Provider,
    RetryPolicy,
    call_with_retries,
    reading_stream,
    user_error_for,
)
from autoresearch.agent.tools import ProposalTools, ToolConversation
from autoresearch.errors import UserError

OPENAI = Provider("the OpenAI-compatible API", openai.APIStatusError, openai.APITimeoutError,
                  openai.APIConnectionError, "check OPENAI_API_KEY (and OPENAI_BASE_URL)",
                  api_error=openai.APIError)

DEFAULT_REQUEST_TIMEOUT = 600.0  # seconds
CHECK_TIMEOUT = 20.0
PLACEHOLDER_KEY = "no-key"  # sent to a custom base URL when OPENAI_API_KEY is unset
MODELS_SHOWN = 10


def _client(request_timeout: float) -> openai.OpenAI:
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        if not os.environ.get("OPENAI_BASE_URL"):
            raise UserError("--agent openai needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local server "
                            "such as vLLM or Ollama, which usually needs no key)")
        key = PLACEHOLDER_KEY
    return openai.OpenAI(api_key=key, max_retries=0, timeout=request_timeout)


class _Assembled:
    """One streamed response put back together: text, tool calls, finish reason and usage."""

    def __init__(self) -> None:
        self.text = ""
        self.reasoning = ""
        self.calls: dict[int, dict] = {}
        self.finish_reason: str | None = None
        self.usage: object | None = None

    def add(self, chunk: object) -> None:
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage  # type: ignore[attr-defined]
        for choice in getattr(chunk, "choices", None) or []:
            delta = choice.delta
            if delta is not None:
                self.text += delta.content or ""
                extra = getattr(delta, "model_extra", None) or {}
                reasoning = extra.get("reasoning_content") or extra.get("reasoning")
                if isinstance(reasoning, str):
                    self.reasoning += reasoning
                for piece in delta.tool_calls or []:
                    call = self.calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                    if piece.id:
                        call["id"] = piece.id
                    function = piece.function
                    if function is not None:
                        if function.name and function.name != call["name"]:
                            call["name"] += function.name
                        call["arguments"] += function.arguments or ""
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def tool_calls(self, turn: int) -> list[dict]:
        calls = []
        for index in sorted(self.calls):
            call = self.calls[index]
            calls.append({"id": call["id"] or f"call_{turn}_{index}", "type": "function",
                          "function": {"name": call["name"], "arguments": call["arguments"]}})
        return calls


class OpenAIProposer(ToolConversation):
    """Proposes each experiment through an OpenAI-compatible Chat Completions endpoint."""

    name = "openai"

    def __init__(self, model: str, client: openai.OpenAI | None = None, max_turns: int = 30, *,
                 retry: RetryPolicy | None = None, request_timeout: float | None = None,
                 notes_path: Path | None = None, view_max_characters: int | None = 100_000,
                 prices: Prices | None = None, max_completion_tokens: int | None = None):
        if not model:
            raise UserError("--agent openai needs --model (the model's ID at the endpoint, e.g. what "
                            "`curl $OPENAI_BASE_URL/models` lists), or `model` in [tool.autoresearch]")
        self.model = model
        timeout = request_timeout or DEFAULT_REQUEST_TIMEOUT
        self.client = _client(timeout) if client is None else client.with_options(max_retries=0, timeout=timeout)
        self.max_turns = max_turns
        self.retry = retry or RetryPolicy()
        self.notes_path = Path(notes_path) if notes_path is not None else None
        self.view_max_characters = view_max_characters
        self.prices = price_for(model, prices)
        self.max_completion_tokens = max_completion_tokens  # None: the server's default

    # --- the conversation (ToolConversation.propose gives it the editor and tools) --------------

    def _converse(self, context: ProposalContext, editor: TrainPyEditor, tools: ProposalTools, usage: Usage,
                  transcript: list[dict]) -> Proposal:
        start_text = editor.train_py.read_text(encoding="utf-8")
        functions = [{"type": "function", "function": editor.function_definition()}] + [
            {"type": "function", "function": {"name": spec["name"], "description": spec["description"],
                                              "parameters": spec["schema"]}} for spec in tools.extra_tools()]
        system = "\n\n".join(block["text"] for block in prompts.system_blocks(context.prepare_py, {}))
        briefing = "\n\n".join(block["text"] for block in prompts.briefing_blocks(context, start_text, {}))
        messages: list[dict] = [{"role": "system", "content": system}, {"role": "user", "content": briefing}]
        transcript += [{"role": "system", "model": self.model, "content": system,
                        "tools": [tool["function"]["name"] for tool in functions]}, messages[1]]
        if self.prices is None:
            transcript.append({"role": "harness", "event": "note", "text": unpriced_note(self.model)})

        last_text: str | None = None
        nudged = False
        finished = False
        for turn in range(self.max_turns):
            try:
                response = self._stream(functions, messages, transcript)
            except ContextTooLongError as error:
                if turn == 0:
                    raise
                transcript.append({"role": "harness", "event": "context_full", "text": str(error)})
                finished = True
                break
            turn_usage = self._usage_of(response, transcript)
            usage.add(turn_usage)
            calls = response.tool_calls(turn)
            assistant: dict = {"role": "assistant", "content": response.text or None}
            if calls:
                assistant["tool_calls"] = calls
            messages.append(assistant)
            entry = {**assistant, "finish_reason": response.finish_reason,
                     "usage": {**turn_usage.as_tokens(),
                               "cost_usd": turn_usage.cost_usd if turn_usage.cost_known else None}}
            if response.reasoning:
                entry["reasoning"] = response.reasoning
            transcript.append(entry)
            if response.text.strip():
                last_text = response.text
            if calls:
                cut_short = response.finish_reason == "length"
                for call in calls:
                    result = self._run_call(call, tools, truncated=cut_short and call is calls[-1])
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.content})
                    transcript.append({**messages[-1], "is_error": result.is_error})
                continue
            unchanged = editor.train_py.read_text(encoding="utf-8") == start_text
            if unchanged and not nudged:
                nudged = True
                messages.append({"role": "user", "content": prompts.UNCHANGED_NUDGE})
                transcript.append(messages[-1])
                continue
            finished = True
            break
        if not finished:
            transcript.append({"role": "harness", "event": "max_turns",
                               "text": f"stopped after {self.max_turns} turns; train.py is used as is"})
        return Proposal(description=describe(last_text or "") or NO_DESCRIPTION, usage=usage,
                        transcript=transcript)

    def _stream(self, functions: list[dict], messages: list[dict], transcript: list[dict]) -> _Assembled:
        request: dict = {"model": self.model, "messages": messages, "tools": functions, "stream": True,
                         "stream_options": {"include_usage": True}}
        if self.max_completion_tokens is not None:
            request["max_completion_tokens"] = self.max_completion_tokens

        def attempt() -> _Assembled:
            response = _Assembled()
            with reading_stream(OPENAI):
                stream = self.client.chat.completions.create(**request)
                with stream:
                    for chunk in stream:
                        response.add(chunk)
            if response.finish_reason is None:
                raise IncompleteStreamError("the stream ended before the response was complete")
            return response

        def record_retry(failures: int, delay: float, fault: Fault) -> None:
            transcript.append({"role": "harness", "event": "retry", "attempt": failures + 1,
                               "delay_s": round(delay, 3), "error": fault.summary})

        return call_with_retries(attempt, self.retry, model=self.model, provider=OPENAI, on_retry=record_retry)

    def _usage_of(self, response: _Assembled, transcript: list[dict]) -> Usage:
        raw = response.usage
        if raw is None:
            transcript.append({"role": "harness", "event": "note",
                               "text": "the server sent no usage for this response: its tokens are not counted"})
            return Usage(cost_known=False)
        prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
        output = int(getattr(raw, "completion_tokens", 0) or 0)
        details = getattr(raw, "prompt_tokens_details", None)
        cached = min(prompt, int(getattr(details, "cached_tokens", 0) or 0)) if details is not None else 0
        fresh = prompt - cached
        if self.prices is None:
            return Usage(input_tokens=fresh, output_tokens=output, cache_read_tokens=cached, cost_known=False)
        input_rate = max(self.prices.input, self.prices.cache_write_5m)  # a write surcharge, if configured
        cost = (fresh * input_rate + cached * self.prices.cache_read + output * self.prices.output) / 1_000_000
        return Usage(input_tokens=fresh, output_tokens=output, cache_read_tokens=cached, cost_usd=cost)

    @staticmethod
    def _run_call(call: dict, tools: ProposalTools, truncated: bool) -> ToolResult:
        if truncated:
            return ToolResult("Error: your response hit the output token limit in the middle of this tool "
                              "call, so it was not executed. Make the call again, shorter.", is_error=True)
        raw = call["function"]["arguments"] or "{}"
        try:
            arguments = json.loads(raw)
        except json.JSONDecodeError as error:
            return ToolResult(f"Error: the arguments are not valid JSON ({error.msg} at character {error.pos}); "
                              "send one JSON object", is_error=True)
        return tools.run(call["function"]["name"], arguments)

    # --- fail fast ----------------------------------------------------------------------------

    def check(self) -> None:
        """Before the baseline: list the server's models (free) and find ours there.

        A wrong key (401), an unreachable URL or a model the server does not serve is one line now.
        A server without a model list (404/405) is asked for a one-token completion instead.
        """
        client = self.client.with_options(timeout=CHECK_TIMEOUT, max_retries=1)
        where = str(client.base_url).rstrip("/")
        try:
            served = [model.id for model in client.models.list().data]
        except openai.APIStatusError as error:
            if error.status_code in (404, 405):
                self._check_with_a_completion(client, where)
                return
            raise user_error_for(error, self.model, OPENAI) from None
        except openai.APIConnectionError as error:
            raise UserError(f"cannot reach the OpenAI-compatible API at {where}: {error.__cause__ or error}; "
                            "check OPENAI_BASE_URL and that the server is running") from None
        if served and self.model not in served:
            listed = ", ".join(served[:MODELS_SHOWN]) + (", ..." if len(served) > MODELS_SHOWN else "")
            raise UserError(f"the OpenAI-compatible API at {where} does not serve model {self.model!r}; "
                            f"it serves: {listed} (check --model)")

    def _check_with_a_completion(self, client: openai.OpenAI, where: str) -> None:
        try:
            client.chat.completions.create(model=self.model, max_completion_tokens=1,
                                           messages=[{"role": "user", "content": "ping"}])
        except openai.APIStatusError as error:
            raise user_error_for(error, self.model, OPENAI) from None
        except openai.APIConnectionError as error:
            raise UserError(f"cannot reach the OpenAI-compatible API at {where}: {error.__cause__ or error}; "
                            "check OPENAI_BASE_URL and that the server is running") from None
