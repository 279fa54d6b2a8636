"""The Claude proposer against a real HTTP fake of the Messages API, driven by the real SDK."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest
from fake_anthropic import FakeAnthropic, Fault, reply, text, thinking, tool_use

from autoresearch.agent import create_proposer
from autoresearch.agent.base import HistoryRow, ProposalContext
from autoresearch.agent.claude import NO_DESCRIPTION, ClaudeProposer, describe
from autoresearch.agent.offline import OfflineProposer
from autoresearch.agent.pricing import price_for
from autoresearch.agent.retry import ApiUnavailableError, RetryPolicy
from autoresearch.errors import UserError

EDITOR = "str_replace_based_edit_tool"
MODEL = "claude-sonnet-5-5"
TRAIN_PY = "import torch\n\nDEPTH = 8\nMATRIX_LR = 0.04  # Muon\nprint('training')\n"
PREPARE_PY = "MAX_SEQ_LEN = 2048\nTIME_BUDGET = 300\n"
FINAL = "MATRIX_LR 0.04 -> 0.06: a faster Muon learning rate\n\nIt was undertrained."


@pytest.fixture
def server(monkeypatch):
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        yield fake


@pytest.fixture
def context(tmp_path: Path) -> ProposalContext:
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / "train.py").write_text(TRAIN_PY)
    (worktree / "prepare.py").write_text(PREPARE_PY)
    (worktree / "program.md").write_text("Try learning rates first.\n")
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    history = [HistoryRow(0, "baseline", 1.0, None, "keep"),
               HistoryRow(1, "DEPTH 8 -> 9", 1.01, 0.01, "discard")]
    return ProposalContext(worktree=worktree, program_md="Try learning rates first.\n", prepare_py=PREPARE_PY,
                           best_train_py=TRAIN_PY, best_val_bpb=1.0, history=history, trial_number=2,
                           rejection_notes=["trial 1 edited prepare.py"], trial_dir=trial_dir)


def fast_retry(**overrides) -> RetryPolicy:
    return RetryPolicy(**{"initial_delay": 0.01, "max_delay": 0.02, "patience": 10.0, **overrides})


def proposer(**kwargs) -> ClaudeProposer:
    return ClaudeProposer(kwargs.pop("model", MODEL), retry=kwargs.pop("retry", fast_retry()), **kwargs)


def view(path: str = "train.py") -> dict:
    return tool_use(EDITOR, {"command": "view", "path": path})


def replace(old: str, new: str, path: str = "train.py") -> dict:
    return tool_use(EDITOR, {"command": "str_replace", "path": path, "old_str": old, "new_str": new})


def tool_results(request: dict) -> list[dict]:
    return [block for block in request["messages"][-1]["content"] if block["type"] == "tool_result"]


def breakpoints(request: dict) -> list[dict]:
    found = [block["cache_control"] for block in request.get("system", []) if "cache_control" in block]
    for message in request["messages"]:
        found += [block["cache_control"] for block in message["content"] if "cache_control" in block]
    return found


def test_a_scripted_conversation_edits_train_py_and_yields_the_description(server, context):
    server.enqueue(reply(view()),
                   reply(thinking("the LR looks low"), text("Raising it."),
                         replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")),
                   reply(text(FINAL)))
    proposal = proposer().propose(context)
    assert proposal.description == "MATRIX_LR 0.04 -> 0.06: a faster Muon learning rate"
    assert (context.worktree / "train.py").read_text() == TRAIN_PY.replace("0.04", "0.06")
    assert len(server.requests) == 3
    first = server.requests[0]
    assert first["model"] == MODEL and first["stream"] is True
    assert {"type": "text_editor_20250728", "name": EDITOR, "max_characters": 100_000} in first["tools"]
    assert "read_history" in [tool["name"] for tool in first["tools"]]
    system_text = "".join(block["text"] for block in first["system"])
    assert "Edit only `train.py`" in system_text and "MAX_SEQ_LEN = 2048" in system_text
    briefing = "".join(block["text"] for block in first["messages"][0]["content"])
    assert "Try learning rates first." in briefing and "DEPTH 8 -> 9" in briefing
    assert "trial 1 edited prepare.py" in briefing and "MATRIX_LR = 0.04  # Muon" in briefing
    viewed = tool_results(server.requests[1])
    assert len(viewed) == 1 and "     4\tMATRIX_LR = 0.04  # Muon" in viewed[0]["content"]
    assert not viewed[0].get("is_error")
    # The thinking block goes back to the API exactly as it came, signature included.
    assistant = server.requests[2]["messages"][-2]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"type": "thinking", "thinking": "the LR looks low",
                                       "signature": "fake-signature"}
    json.dumps(proposal.transcript)  # JSON-serializable
    assert proposal.transcript[0]["role"] == "system" and proposal.transcript[-1]["role"] == "assistant"


def test_cache_breakpoints_1h_on_the_stable_prefix_and_one_moving_breakpoint(server, context):
    server.enqueue(reply(view()), reply(replace("DEPTH = 8", "DEPTH = 10")), reply(text("DEPTH 8 -> 10")))
    proposer().propose(context)
    for request in server.requests:
        assert request["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert request["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert "program.md" in request["messages"][0]["content"][0]["text"]
        found = breakpoints(request)
        assert len(found) == 3  # never more than the API's 4; older moving breakpoints are removed
        assert request["messages"][-1]["content"][-1]["cache_control"]["type"] == "ephemeral"
        ttls = [bp.get("ttl", "5m") for bp in found]
        assert ttls == sorted(ttls, key=lambda ttl: ttl != "1h")  # 1h entries before 5m ones


def test_usage_and_cost_accumulate_across_turns(server, context):
    server.enqueue(
        reply(replace("DEPTH = 8", "DEPTH = 9"), usage={
            "input_tokens": 1000, "output_tokens": 100, "cache_creation_input_tokens": 5000,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_1h_input_tokens": 5000, "ephemeral_5m_input_tokens": 0}}),
        reply(text("DEPTH 8 -> 9"), usage={
            "input_tokens": 50, "output_tokens": 200, "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 5000,
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 300}}))
    usage = proposer().propose(context).usage
    assert usage.as_tokens() == {"input": 1050, "output": 300, "cache_read": 5000, "cache_write": 5300}
    # Sonnet 5.5 (platform.claude.com/docs/en/models/sonnet-5-5/overview): $2 in, $10 out,
    # $4 1h write, $2.50 5m write, $0.20 cache read per million.
    expected = (1050 * 2 + 300 * 10 + 5000 * 4 + 300 * 2.5 + 5000 * 0.20) / 1e6
    assert usage.cost_usd == pytest.approx(expected) and usage.cost_known


def test_api_faults_are_waited_out_and_the_proposal_completes(server, context):
    faults = [Fault.status(429, retry_after=0), Fault.status(529), Fault.status(500), Fault.stream_error(),
              Fault.drop(), Fault.drop(after_events=3), Fault.slow(3.0)]
    server.enqueue(*faults, reply(replace("DEPTH = 8", "DEPTH = 7")), Fault.status(503),
                   reply(text("DEPTH 8 -> 7")))
    proposal = proposer(request_timeout=1.0).propose(context)  # the slow reply exceeds it
    assert proposal.description == "DEPTH 8 -> 7"
    assert "DEPTH = 7" in (context.worktree / "train.py").read_text()
    assert len(server.requests) == len(faults) + 3
    retries = [entry for entry in proposal.transcript if entry.get("event") == "retry"]
    assert len(retries) == len(faults) + 1
    summaries = " ".join(entry["error"] for entry in retries)
    for expected in ("429", "529 overloaded", "HTTP 500", "inside the stream", "connection", "timed out"):
        assert expected in summaries, expected
    # A retried request is the same request: the edit happened once, tool results were sent once.
    assert server.requests[-1]["messages"][-1]["content"][0]["type"] == "tool_result"
    assert len(server.requests[-1]["messages"]) == 3


def test_retry_after_is_honoured_and_patience_ends_in_a_user_error(server, context):
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    policy = RetryPolicy(initial_delay=2.0, max_delay=5.0, patience=20.0, jitter=0.0, sleep=sleep,
                         clock=lambda: now[0])
    server.enqueue(Fault.status(429, retry_after=7), *[Fault.status(529) for _ in range(5)])
    with pytest.raises(ApiUnavailableError) as raised:
        proposer(retry=policy).propose(context)
    assert isinstance(raised.value, UserError)
    assert slept == [7.0, 4.0, 5.0]  # retry-after honoured; back-off doubles per failure up to the cap
    assert "529" in str(raised.value) and "\n" not in str(raised.value)


def test_failed_edits_go_back_to_the_model_as_tool_errors(server, context):
    server.enqueue(
        reply(replace("MATRIX_LR = 0.05", "MATRIX_LR = 0.06")),  # does not match
        reply(replace("MAX_SEQ_LEN = 2048", "MAX_SEQ_LEN = 64", path="prepare.py")),  # read-only file
        reply(tool_use("run_shell", {"cmd": "rm -rf /"}), tool_use(EDITOR, {"command": "str_replace"})),
        reply(replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05")),
        reply(text("MATRIX_LR 0.04 -> 0.05")))
    proposal = proposer().propose(context)
    assert proposal.description == "MATRIX_LR 0.04 -> 0.05"
    mismatch, = tool_results(server.requests[1])
    assert mismatch["is_error"] is True and "did not appear verbatim" in mismatch["content"]
    readonly, = tool_results(server.requests[2])
    assert readonly["is_error"] is True and "prepare.py is read-only" in readonly["content"]
    unknown, missing = tool_results(server.requests[3])
    assert unknown["is_error"] is True and "no tool named 'run_shell'" in unknown["content"]
    assert missing["is_error"] is True and "missing" in missing["content"]
    applied, = tool_results(server.requests[4])
    assert "is_error" not in applied
    assert (context.worktree / "prepare.py").read_text() == PREPARE_PY
    assert "MATRIX_LR = 0.05" in (context.worktree / "train.py").read_text()


def test_an_unchanged_train_py_is_pointed_out_once(server, context):
    server.enqueue(reply(text("I think we should raise the LR.")), reply(replace("DEPTH = 8", "DEPTH = 9")),
                   reply(text("DEPTH 8 -> 9")))
    proposal = proposer().propose(context)
    nudge = server.requests[1]["messages"][-1]["content"][0]
    assert nudge["type"] == "text" and "train.py is unchanged" in nudge["text"]
    assert proposal.description == "DEPTH 8 -> 9"
    server.enqueue(reply(text("Nothing to change.")), reply(text("Still nothing.")))
    (context.worktree / "train.py").write_text(TRAIN_PY)
    before = len(server.requests)
    assert proposer().propose(context).description == "Still nothing."
    assert len(server.requests) - before == 2  # told once, not forever


def test_max_turns_stops_the_conversation(server, context):
    server.enqueue(reply(text("Looking."), view()), reply(view("prepare.py")))
    proposal = proposer(max_turns=2).propose(context)
    assert len(server.requests) == 2 and server.pending == 0
    assert proposal.transcript[-1]["event"] == "max_turns"
    assert proposal.description == "Looking."


def test_a_repair_attempt_asks_to_fix_the_crash(server, context):
    context.repair_attempt = 1
    context.last_crash_tail = "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory"
    server.enqueue(reply(text("DEVICE_BATCH_SIZE halved after OOM")))
    server.enqueue(reply(text("Cannot fix.")))
    proposer().propose(context)
    briefing = "".join(block["text"] for block in server.requests[0]["messages"][0]["content"])
    assert "crashed (repair attempt 1)" in briefing and "CUDA out of memory" in briefing


def test_auth_and_bad_request_errors_are_one_line_user_errors(server, context):
    server.enqueue(Fault.status(401))
    with pytest.raises(UserError) as raised:
        proposer().propose(context)
    assert "ANTHROPIC_API_KEY" in str(raised.value) and "401" in str(raised.value)
    assert len(server.requests) == 1  # not retried
    server.enqueue(Fault.status(400))
    with pytest.raises(UserError, match="400 invalid_request_error"):
        proposer().propose(context)
    server.enqueue(Fault.status(404))
    with pytest.raises(UserError, match="--model"):
        proposer().propose(context)


def test_research_notes_persist_in_the_given_file(server, context, tmp_path):
    notes = tmp_path / "run" / "notes.md"
    note = {"action": "append", "text": "LR 0.06 looked promising"}
    server.enqueue(reply(tool_use("research_notes", note)),
                   reply(tool_use("research_notes", {"action": "read"}), tool_use("read_history", {})),
                   reply(replace("DEPTH = 8", "DEPTH = 9")), reply(text("DEPTH 8 -> 9")))
    proposer(notes_path=notes).propose(context)
    assert notes.read_text() == "## trial 2\nLR 0.06 looked promising\n\n"
    read, history = tool_results(server.requests[2])
    assert "LR 0.06 looked promising" in read["content"]
    assert "DEPTH 8 -> 9" in history["content"] and "discard" in history["content"]


def test_the_fake_server_also_answers_without_streaming(server):
    server.enqueue(reply(text("plain")))
    client = anthropic.Anthropic(max_retries=0)
    message = client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "plain"
    headers = server.headers[0]
    assert "test-key" in (headers.get("x-api-key", "") + headers.get("authorization", ""))


def test_describe_and_pricing():
    assert describe("\n\n## **MATRIX_LR 0.04 -> 0.06**\nwhy") == "MATRIX_LR 0.04 -> 0.06"
    assert len(describe("x" * 500)) == 120 and describe("   \n") is None
    assert NO_DESCRIPTION.startswith("(")
    assert price_for("claude-haiku-4-5-20251001").input == 1.0
    assert price_for("claude-sonnet-5").cache_read == pytest.approx(0.2)
    assert price_for("claude-sonnet-5-5").cache_read == pytest.approx(0.2)
    # Unknown models, and unknown versions of known families, are unpriced rather than guessed.
    assert price_for("claude-unknown-9") is None and price_for("claude-sonnet-5-7") is None


def test_create_proposer_picks_by_name_and_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert isinstance(create_proposer("auto", seed=3), OfflineProposer)
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY"):
        create_proposer("claude")
    with pytest.raises(UserError, match="unknown agent"):
        create_proposer("gpt")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("AUTORESEARCH_MODEL", "claude-opus-5")
    chosen = create_proposer("auto")
    assert isinstance(chosen, ClaudeProposer) and chosen.model == "claude-opus-5"
    assert create_proposer("claude", model="claude-haiku-4-5").model == "claude-haiku-4-5"
    assert chosen.client.max_retries == 0


def test_a_conversation_that_outgrows_the_context_ends_with_what_is_there(server, context):
    server.enqueue(reply(text("Raising depth."), replace("DEPTH = 8", "DEPTH = 9")), Fault.status(413))
    proposal = proposer().propose(context)
    assert proposal.description == "Raising depth." and proposal.transcript[-1]["event"] == "context_full"
    assert "DEPTH = 9" in (context.worktree / "train.py").read_text()
    server.enqueue(Fault.status(413))
    with pytest.raises(UserError, match="too long"):  # the briefing alone: nothing to salvage
        proposer().propose(context)


# --- issue 9: faults that must not cost a trial -------------------------------------------------


def test_a_malformed_event_in_the_stream_is_retried_like_other_stream_faults(server, context):
    server.enqueue(Fault.malformed(after_events=2), Fault.malformed(after_events=0),
                   reply(replace("DEPTH = 8", "DEPTH = 6")), reply(text("DEPTH 8 -> 6")))
    proposal = proposer().propose(context)
    assert proposal.description == "DEPTH 8 -> 6"
    retries = [entry for entry in proposal.transcript if entry.get("event") == "retry"]
    assert len(retries) == 2 and all("malformed" in entry["error"] for entry in retries)
    assert len(server.requests) == 4


def test_retryable_faults_are_waited_out_past_two_hours_by_default(server, context):
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    policy = RetryPolicy(sleep=sleep, clock=lambda: now[0])  # the default patience and back-off
    outage = 40  # 529s in a row: about three hours of back-off capped at five minutes
    server.enqueue(*[Fault.status(529) for _ in range(outage)], reply(replace("DEPTH = 8", "DEPTH = 5")),
                   reply(text("DEPTH 8 -> 5")))
    proposal = proposer(retry=policy).propose(context)
    assert proposal.description == "DEPTH 8 -> 5"
    assert len(slept) == outage and sum(slept) > 2 * 3600
    assert max(slept) <= 300 * 1.25  # each wait stays within the cap (plus jitter)


def test_view_program_md_returns_the_copy_the_harness_just_read(server, context):
    # The worktree holds the committed program.md; the human has since edited the one in the checkout,
    # and the harness read that one into the context.
    context.program_md = "Now try depth, not learning rates.\n"
    server.enqueue(reply(view("program.md")), reply(replace("DEPTH = 8", "DEPTH = 9")),
                   reply(text("DEPTH 8 -> 9")))
    proposer().propose(context)
    viewed, = tool_results(server.requests[1])
    assert "Now try depth, not learning rates." in viewed["content"]
    assert "Try learning rates first." not in viewed["content"]


# --- fail fast, before the baseline ------------------------------------------------------------


def test_the_check_is_a_free_token_count_and_names_each_problem(monkeypatch):
    with FakeAnthropic(known_models={MODEL}, api_key="test-key") as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        proposer().check()
        assert fake.counts == 1 and not fake.requests  # nothing billable was sent
        with pytest.raises(UserError, match=r"does not know model 'claude-nope-1' \(404\)"):
            proposer(model="claude-nope-1").check()
        monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong-key")
        with pytest.raises(UserError, match=r"rejected the API key \(401\).*ANTHROPIC_API_KEY"):
            proposer().check()
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        fake.check_fault = Fault.status(404, error_type="not_found_error")  # a gateway without count_tokens
        fake.enqueue(reply(text("ok")))
        proposer().check()
        assert fake.requests[-1]["max_tokens"] == 1
    # the server is gone: an unreachable URL is one line, within the check's short time-out
    with pytest.raises(UserError, match="cannot reach the Anthropic API"):
        proposer().check()


def test_a_failed_or_interrupted_conversation_carries_its_paid_usage(server, context):
    from autoresearch.agent.base import Usage, absorb_partial

    server.enqueue(reply(view(), usage={"input_tokens": 1000, "output_tokens": 100}), Fault.status(400))
    with pytest.raises(UserError) as raised:
        proposer().propose(context)
    usage, transcript = Usage(), []
    absorb_partial(raised.value, usage, transcript)
    assert usage.input_tokens == 1000 and usage.output_tokens == 100
    assert usage.cost_usd == pytest.approx((1000 * 2 + 100 * 10) / 1e6)  # Sonnet 5.5's $2 / $10
    assert [entry["role"] for entry in transcript][:2] == ["system", "user"]


def test_a_server_that_only_sends_garbage_fails_the_proposal_not_the_night(server, context):
    server.enqueue(*[Fault.malformed(after_events=1) for _ in range(4)])
    with pytest.raises(Exception, match="malformed event in the stream") as raised:
        proposer(retry=fast_retry(max_malformed=3)).propose(context)
    assert not isinstance(raised.value, UserError)  # an agent error the loop records, not a fatal one
    assert len(server.requests) == 4
