"""Surviving a flaky API all night: which errors to wait out, how long, and which to stop on.

`call_with_retries(attempt, policy)` runs `attempt()` until it returns. Rate limits (429, whose
`retry-after` is honoured), overload (529 or an `overloaded_error`), other 5xx, 408/409, dropped
connections, errors sent inside a stream (`event: error`), streams cut short, and time-outs are
waited out with exponential back-off and jitter (2 s doubling to a 5 min cap by default), for as
long as the policy's total patience allows (2 h by default). The SDK's own retries are meant to
be off (`max_retries=0`) so this is the one place that decides.

Errors the user must fix (401 bad key, 403, 404 unknown model, 400 bad request, ...) raise
`UserError` with one line at once. When patience runs out, `ApiUnavailableError` (a UserError)
says for how long the API failed and what it said last.

What this does not protect against: a request that keeps failing the same non-retryable way for
reasons the user cannot fix (it stops the run with that message), and usage billed for attempts
that failed halfway through a stream (not counted in the run's cost).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anthropic

from autoresearch.errors import UserError

try:  # the SDK's HTTP library: httpx2 in anthropic>=2, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - older SDKs
    import httpx as _http  # type: ignore[no-redef]

log = logging.getLogger("autoresearch.agent")

T = TypeVar("T")

RETRYABLE_STATUS = {408, 409, 429}
RETRYABLE_ERROR_TYPES = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


class IncompleteStreamError(Exception):
    """The stream ended without a stop reason: the connection was cut before the message finished."""


class ApiUnavailableError(UserError):
    """The API kept failing with retryable errors for longer than the configured patience."""


class ContextTooLongError(UserError):
    """The request no longer fits the model's context window (413, or 400 'prompt is too long')."""


@dataclass
class RetryPolicy:
    initial_delay: float = 2.0  # seconds before the first retry
    max_delay: float = 300.0  # cap on one wait (a server's retry-after may ask for longer, within patience)
    patience: float = 7200.0  # total seconds spent failing before giving up
    multiplier: float = 2.0
    jitter: float = 0.25  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def backoff(self, failures: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, failures - 1))
        return max(0.0, base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))


@dataclass
class Fault:
    """A retryable failure, described for the log and the transcript."""

    summary: str
    retry_after: float | None = None


def _error_type(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return error["type"]
        if isinstance(body.get("type"), str) and body.get("type") != "error":
            return body["type"]
    return None


def _error_message(error: anthropic.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str) and message:
            return message
    return str(error.message).splitlines()[0] if error.message else "no message"


def _retry_after(error: anthropic.APIStatusError) -> float | None:
    headers = error.response.headers if error.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own back-off
        if seconds >= 0:
            return seconds
    return None


def classify(error: BaseException) -> Fault | None:
    """A Fault for errors worth waiting out, None for anything else (which the caller re-raises)."""
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        error_type = _error_type(error.body)
        if status < 400:  # an `event: error` inside a 200 stream
            return Fault(f"error inside the stream ({error_type or 'unknown'}): {_error_message(error)}")
        if status in RETRYABLE_STATUS or status >= 500 or error_type in RETRYABLE_ERROR_TYPES:
            overloaded = status == 529 or error_type == "overloaded_error"
            label = "overloaded" if overloaded else (error_type or "error")
            return Fault(f"HTTP {status} {label}: {_error_message(error)}", _retry_after(error))
        return None
    if isinstance(error, anthropic.APITimeoutError):
        return Fault("request timed out")
    if isinstance(error, anthropic.APIConnectionError):
        cause = error.__cause__
        return Fault(f"connection error: {cause or error}")
    if isinstance(error, _http.TimeoutException):
        return Fault(f"stream timed out: {error.__class__.__name__}")
    if isinstance(error, _http.TransportError):
        return Fault(f"connection dropped mid-stream: {error}")
    if isinstance(error, IncompleteStreamError):
        return Fault(str(error))
    return None


def user_error_for(error: anthropic.APIStatusError, model: str) -> UserError:
    """One line for a request the API refused for a reason the user has to fix."""
    status = error.status_code
    message = _error_message(error)
    if status == 401:
        return UserError(f"the Anthropic API rejected the API key (401): {message}; check ANTHROPIC_API_KEY")
    if status == 403:
        return UserError(f"the Anthropic API refused access (403): {message}; check the key's permissions")
    if status == 404:
        return UserError(f"the Anthropic API does not know model {model!r} (404): {message}; "
                         "check --model / AUTORESEARCH_MODEL")
    if status == 413 or (status == 400 and "too long" in message.lower()):
        return ContextTooLongError(f"the request is too long for model {model!r} ({status}): {message}")
    if status == 402:
        return UserError(f"the Anthropic API requires payment (402): {message}; check the account's billing")
    error_type = _error_type(error.body) or "error"
    return UserError(f"the Anthropic API rejected the request ({status} {error_type}): {message}")


def call_with_retries(attempt: Callable[[], T], policy: RetryPolicy, *, model: str,
                      on_retry: Callable[[int, float, Fault], None] | None = None) -> T:
    """Run `attempt` until it succeeds, waiting out retryable faults within the policy's patience."""
    started = policy.clock()
    failures = 0
    while True:
        try:
            return attempt()
        except Exception as error:  # noqa: BLE001 - classified just below; the rest is re-raised
            fault = classify(error)
            if fault is None:
                if isinstance(error, anthropic.APIStatusError):
                    raise user_error_for(error, model) from error
                raise
            failures += 1
            delay = fault.retry_after if fault.retry_after is not None else policy.backoff(failures)
            waited = policy.clock() - started
            if waited + delay > policy.patience:
                raise ApiUnavailableError(
                    f"the Anthropic API kept failing for {waited / 60:.1f} min ({failures} attempts; last: "
                    f"{fault.summary}); giving up after the configured patience of "
                    f"{policy.patience / 60:.0f} min"
                ) from error
            log.warning("Anthropic API: %s; retrying in %.1f s (attempt %d)",
                        fault.summary, delay, failures + 1)
            if on_retry is not None:
                on_retry(failures, delay, fault)
            policy.sleep(delay)
