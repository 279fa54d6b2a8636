"""Surviving a flaky API all night: which errors to wait out, how long, and which to stop on.

`call_with_retries(attempt, policy, provider=...)` runs `attempt()` until it returns. Rate limits
(429, whose `retry-after` is honoured), overload (529 or an `overloaded_error`), other 5xx,
408/409, dropped connections, errors sent inside a stream (`event: error`), malformed stream
events (data that is not JSON, events out of order: `MalformedStreamError`), streams cut short,
and time-outs are waited out with exponential back-off and jitter (2 s doubling to a 5 min cap by
default). By default there is no total limit: an outage is waited out until the night's own
limits (`--hours`, Ctrl-C) end the run; `RetryPolicy.patience` sets one (tests, config). The
SDK's own retries are meant to be off (`max_retries=0`) so this is the one place that decides.
The same rules serve the Anthropic SDK and the OpenAI SDK (`Provider` names each one's error
classes and the words of its one-line errors).

Errors the user must fix (401 bad key, 403, 404 unknown model, 400 bad request, ...) raise
`UserError` with one line at once. When a configured patience runs out, `ApiUnavailableError`
(a UserError) says for how long the API failed and what it said last.

What this does not protect against: a request that keeps failing the same non-retryable way for
reasons the user cannot fix (it stops the run with that message), a server that keeps answering
200 with garbage (after `max_malformed` such streams in a row the attempt fails and the loop
records the proposal as an agent error, so the night goes on), and usage billed for attempts
that failed halfway through a stream (the API reports no usage for them).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# A 429 that waiting does not cure: OpenAI's answer when the account is out of credit.
NOT_RETRYABLE_ERROR_TYPES = {"insufficient_quota", "billing_error"}


class IncompleteStreamError(Exception):
    """The stream ended without a stop reason: the connection was cut before the message finished."""


class MalformedStreamError(Exception):
    """An event of a streamed response could not be read (not JSON, out of order, missing fields)."""


@dataclass(frozen=True)
class Provider:
    """One SDK's error classes and how its one-line errors name things."""

    label: str  # "the Anthropic API"
    status_error: type[Exception]  # HTTP errors with .status_code, .body, .response
    timeout_error: type[Exception]
    connection_error: type[Exception]
    key_hint: str  # what to check after a 401
    api_error: type[Exception] | None = None  # an error sent inside a stream with no status (OpenAI)


ANTHROPIC = Provider("the Anthropic API", anthropic.APIStatusError, anthropic.APITimeoutError,
                     anthropic.APIConnectionError, "check ANTHROPIC_API_KEY")


@contextmanager
def reading_stream(provider: Provider) -> Iterator[None]:
    """Turn errors from parsing a stream's events into MalformedStreamError (retryable).

    Anything raised inside the block that is not one of the SDK's own errors or the HTTP
    library's comes from reading the events (json.JSONDecodeError, a KeyError on a missing
    field, the SDK's "unexpected event order" RuntimeError): the server sent something broken.
    """
    known: tuple[type[BaseException], ...] = (provider.status_error, provider.timeout_error,
                                              provider.connection_error, _http.HTTPError,
                                              _http.StreamError, IncompleteStreamError, UserError)
    if provider.api_error is not None:
        known = (*known, provider.api_error)
    try:
        yield
    except known:
        raise
    except Exception as error:  # noqa: BLE001 - see the docstring: a broken event
        raise MalformedStreamError(f"malformed event in the stream ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from error


class ApiUnavailableError(UserError):
    """The API kept failing with retryable errors for longer than the configured patience."""


class ContextTooLongError(UserError):
    """The request no longer fits the model's context window (413, or 400 'prompt is too long')."""


@dataclass
class RetryPolicy:
    initial_delay: float = 2.0  # seconds before the first retry
    max_delay: float = 300.0  # cap on one wait (a server's retry-after may ask for longer, within patience)
    patience: float | None = None  # total seconds spent failing before giving up (None: never give up)
    max_malformed: int = 10  # malformed streams in a row before the attempt fails (a parser bug, not an outage)
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


def _error_object(body: object) -> dict:
    """The error object of a body: Anthropic's {"error": {...}}, or OpenAI's inner object itself."""
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return {}


def _error_type(body: object) -> str | None:
    error = _error_object(body)
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and value and value != "error":
            return value
    return None


def _error_message(error: Exception) -> str:
    message = _error_object(getattr(error, "body", None)).get("message")
    if isinstance(message, str) and message:
        return message.splitlines()[0]
    text = str(getattr(error, "message", "") or error)
    return text.splitlines()[0] if text else "no message"


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    headers = response.headers if response is not None else {}
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


def classify(error: BaseException, provider: Provider = ANTHROPIC) -> Fault | None:
    """A Fault for errors worth waiting out, None for anything else (which the caller re-raises)."""
    if isinstance(error, provider.status_error):
        status = error.status_code  # type: ignore[attr-defined]
        error_type = _error_type(error.body)  # type: ignore[attr-defined]
        if status < 400:  # an `event: error` inside a 200 stream
            return Fault(f"error inside the stream ({error_type or 'unknown'}): {_error_message(error)}")
        if error_type in NOT_RETRYABLE_ERROR_TYPES:
            return None
        if status in RETRYABLE_STATUS or status >= 500 or error_type in RETRYABLE_ERROR_TYPES:
            overloaded = status == 529 or error_type == "overloaded_error"
            label = "overloaded" if overloaded else (error_type or "error")
            return Fault(f"HTTP {status} {label}: {_error_message(error)}", _retry_after(error))
        return None
    if isinstance(error, provider.timeout_error):
        return Fault("request timed out")
    if isinstance(error, provider.connection_error):
        cause = error.__cause__
        return Fault(f"connection error: {cause or error}")
    if provider.api_error is not None and isinstance(error, provider.api_error):
        return Fault(f"error inside the stream ({_error_type(getattr(error, 'body', None)) or 'unknown'}): "
                     f"{_error_message(error)}")
    if isinstance(error, _http.TimeoutException):
        return Fault(f"stream timed out: {error.__class__.__name__}")
    if isinstance(error, _http.TransportError):
        return Fault(f"connection dropped mid-stream: {error}")
    if isinstance(error, (IncompleteStreamError, MalformedStreamError)):
        return Fault(str(error))
    return None


TOO_LONG_WORDS = ("too long", "context length", "context_length", "maximum context", "context window")


def user_error_for(error: Exception, model: str, provider: Provider = ANTHROPIC) -> UserError:
    """One line for a request the API refused for a reason the user has to fix."""
    status = error.status_code  # type: ignore[attr-defined]
    message = _error_message(error)
    label = provider.label
    if status == 401:
        return UserError(f"{label} rejected the API key (401): {message}; {provider.key_hint}")
    if status == 403:
        return UserError(f"{label} refused access (403): {message}; check the key's permissions")
    if status == 413 or (status == 400 and any(words in message.lower() for words in TOO_LONG_WORDS)):
        return ContextTooLongError(f"the request is too long for model {model!r} ({status}): {message}")
    if status == 404:
        return UserError(f"{label} does not know model {model!r} (404): {message}; "
                         "check --model / AUTORESEARCH_MODEL")
    if status == 402 or _error_type(error.body) in NOT_RETRYABLE_ERROR_TYPES:  # type: ignore[attr-defined]
        return UserError(f"{label} requires payment ({status}): {message}; check the account's billing")
    error_type = _error_type(error.body) or "error"  # type: ignore[attr-defined]
    return UserError(f"{label} rejected the request ({status} {error_type}): {message}")


def call_with_retries(attempt: Callable[[], T], policy: RetryPolicy, *, model: str,
                      provider: Provider = ANTHROPIC,
                      on_retry: Callable[[int, float, Fault], None] | None = None) -> T:
    """Run `attempt` until it succeeds, waiting out retryable faults (within the patience, if any)."""
    started = policy.clock()
    failures = 0
    malformed_in_a_row = 0
    while True:
        try:
            return attempt()
        except Exception as error:  # noqa: BLE001 - classified just below; the rest is re-raised
            fault = classify(error, provider)
            if fault is None:
                if isinstance(error, provider.status_error):
                    raise user_error_for(error, model, provider) from error
                raise
            failures += 1
            malformed_in_a_row = malformed_in_a_row + 1 if isinstance(error, MalformedStreamError) else 0
            if malformed_in_a_row > policy.max_malformed:
                raise  # not an outage: this proposal fails (the loop records it) rather than looping all night
            delay = fault.retry_after if fault.retry_after is not None else policy.backoff(failures)
            waited = policy.clock() - started
            if policy.patience is not None and waited + delay > policy.patience:
                raise ApiUnavailableError(
                    f"{provider.label} kept failing for {waited / 60:.1f} min ({failures} attempts; last: "
                    f"{fault.summary}); giving up after the configured patience of "
                    f"{policy.patience / 60:.0f} min"
                ) from error
            log.warning("%s: %s; retrying in %.1f s (attempt %d)",
                        provider.label, fault.summary, delay, failures + 1)
            if on_retry is not None:
                on_retry(failures, delay, fault)
            policy.sleep(delay)
