"""The OpenAI-compatible proposer against a real HTTP fake of Chat Completions, driven by the real SDK."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import openai
import pytest
from fake_openai import FakeOpenAI, Fault, call, reply

from autoresearch.agent.base import HistoryRow, ProposalContext
from autoresearch.agent.openai_chat import OpenAIProposer
from autoresearch.agent.pricing import configured_prices
from autoresearch.agent.retry import RetryPolicy
from autoresearch.errors import UserError

EDITOR = "str_replace_based_edit_tool"
MODEL = "local-coder"
TRAIN_PY = "import torch\n\nDEPTH = 8\nMATRIX_LR = 0.04  # Muon\nprint('training')\n"
PREPARE_PY = "MAX_SEQ_LEN = 2048\nTIME_BUDGET = 300\n"


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAI(models=[MODEL, "other-model"], api_key="test-key") as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        yield fake


@pytest.fixture
def context(tmp_path: Path) -> ProposalContext:
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / "train.py").write_text(TRAIN_PY)
    (worktree / "prepare.py").write_text(PREPARE_PY)
    (worktree / "program.md").write_text("(the committed copy)\n")
    history = [HistoryRow(0, "baseline", 1.0, None, "keep"), HistoryRow(1, "DEPTH 8 -> 9", 1.01, 0.01, "discard")]
    return ProposalContext(worktree=worktree, program_md="Try learning rates first.\n", prepare_py=PREPARE_PY,
                           best_train_py=TRAIN_PY, best_val_bpb=1.0, history=history, trial_number=2,
                           trial_dir=tmp_path / "trial")


def proposer(**kwargs) -> OpenAIProposer:
    retry = kwargs.pop("retry", RetryPolicy(initial_delay=0.01, max_delay=0.02))
    return OpenAIProposer(kwargs.pop("model", MODEL), retry=retry, **kwargs)


def view(path: str = "train.py") -> dict:
    return call(EDITOR, {"command": "view", "path": path})


def replace(old: str, new: str, path: str = "train.py") -> dict:
    return call(EDITOR, {"command": "str_replace", "path": path, "old_str": old, "new_str": new})


def tool_messages(request: dict) -> list[dict]:
    trailing = []
    for message in reversed(request["messages"]):
        if message["role"] != "tool":
            break
        trailing.append(message)
    return trailing[::-1]


def test_a_streamed_conversation_with_split_tool_calls_edits_train_py(server, context):
    server.enqueue(reply("Looking first.", view(), view("program.md")),
                   reply(replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")),
                   reply("MATRIX_LR 0.04 -> 0.06: a faster Muon learning rate\n\nIt was undertrained."))
    proposal = proposer().propose(context)
    assert proposal.description == "MATRIX_LR 0.04 -> 0.06: a faster Muon learning rate"
    assert (context.worktree / "train.py").read_text() == TRAIN_PY.replace("0.04", "0.06")
    first = server.requests[0]
    assert first["model"] == MODEL and first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert [tool["function"]["name"] for tool in first["tools"]] == [EDITOR, "read_history"]
    assert first["messages"][0]["role"] == "system" and "Edit only `train.py`" in first["messages"][0]["content"]
    assert "MAX_SEQ_LEN = 2048" in first["messages"][0]["content"]
    assert "Try learning rates first." in first["messages"][1]["content"]
    assert "DEPTH 8 -> 9" in first["messages"][1]["content"]
    # The arguments came in 7-character pieces; the calls were put back together and answered in order.
    viewed, program = tool_messages(server.requests[1])
    assert "     4\tMATRIX_LR = 0.04  # Muon" in viewed["content"]
    assert "Try learning rates first." in program["content"] and "committed copy" not in program["content"]
    assistant = server.requests[1]["messages"][-3]
    assert assistant["role"] == "assistant" and assistant["content"] == "Looking first."
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == [EDITOR, EDITOR]
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"command": "view",
                                                                                "path": "program.md"}
    json.dumps(proposal.transcript)


def test_faults_are_waited_out_and_the_proposal_completes(server, context):
    faults = [Fault.status(429, retry_after=0), Fault.status(500), Fault.status(503), Fault.drop(),
              Fault.drop(after_chunks=3), Fault.malformed(after_chunks=2), Fault.stream_error(after_chunks=1)]
    server.enqueue(*faults, reply(replace("DEPTH = 8", "DEPTH = 7")), Fault.status(500), reply("DEPTH 8 -> 7"))
    proposal = proposer().propose(context)
    assert proposal.description == "DEPTH 8 -> 7" and "DEPTH = 7" in (context.worktree / "train.py").read_text()
    retries = [entry["error"] for entry in proposal.transcript if entry.get("event") == "retry"]
    assert len(retries) == len(faults) + 1
    summary = " ".join(retries)
    for expected in ("HTTP 429", "HTTP 500", "HTTP 503", "connection", "malformed", "inside the stream"):
        assert expected in summary, expected
    assert len(server.requests[-1]["messages"]) == 4  # system, user, assistant call, tool result: sent once


def test_usage_is_counted_and_priced_from_configured_prices(server, context):
    server.enqueue(reply(replace("DEPTH = 8", "DEPTH = 9"), usage={"prompt_tokens": 5000, "completion_tokens": 100},
                         cached_tokens=4000),
                   reply("DEPTH 8 -> 9", usage={"prompt_tokens": 6000, "completion_tokens": 30}, cached_tokens=5000))
    prices = configured_prices(0.5, 1.5, cache_read=0.05, provider="openai")
    usage = proposer(prices=prices).propose(context).usage
    assert usage.as_tokens() == {"input": 2000, "output": 130, "cache_read": 9000, "cache_write": 0}
    assert usage.cost_known and usage.cost_usd == pytest.approx((2000 * 0.5 + 130 * 1.5 + 9000 * 0.05) / 1e6)
    server.enqueue(reply(replace("DEPTH = 9", "DEPTH = 10")), reply("DEPTH 9 -> 10"))
    unpriced = proposer().propose(context)
    assert not unpriced.usage.cost_known and unpriced.usage.input_tokens == 200
    assert any("no price" in entry.get("text", "") for entry in unpriced.transcript)


def test_bad_arguments_and_unknown_tools_go_back_as_tool_errors(server, context):
    server.enqueue(reply(call(EDITOR, '{"command": "view", "path": ')),
                   reply(call("run_shell", {"cmd": "ls"}), replace("MAX_SEQ_LEN = 2048", "X", path="prepare.py")),
                   reply(replace("DEPTH = 8", "DEPTH = 9")), reply("DEPTH 8 -> 9"))
    assert proposer().propose(context).description == "DEPTH 8 -> 9"
    broken, = tool_messages(server.requests[1])
    assert "not valid JSON" in broken["content"]
    unknown, readonly = tool_messages(server.requests[2])
    assert "no tool named 'run_shell'" in unknown["content"] and "read-only" in readonly["content"]
    assert (context.worktree / "prepare.py").read_text() == PREPARE_PY


def test_refusals_are_one_line_user_errors_and_not_retried(server, context, monkeypatch):
    server.enqueue(Fault.status(400))
    with pytest.raises(UserError, match="rejected the request"):
        proposer().propose(context)
    server.enqueue(Fault.status(429, error_type="insufficient_quota"))
    with pytest.raises(UserError, match="requires payment"):
        proposer().propose(context)
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    with pytest.raises(UserError) as raised:
        proposer().propose(context)
    assert "401" in str(raised.value) and "OPENAI_API_KEY" in str(raised.value) and "\n" not in str(raised.value)
    assert server.pending == 0 and len(server.requests) == 2


def test_a_failed_conversation_carries_its_paid_usage(server, context):
    from autoresearch.agent.base import Usage, absorb_partial

    server.enqueue(reply(view(), usage={"prompt_tokens": 700, "completion_tokens": 50}), Fault.status(400))
    with pytest.raises(UserError) as raised:
        proposer(prices=configured_prices(1.0, 2.0, provider="openai")).propose(context)
    usage, transcript = Usage(), []
    absorb_partial(raised.value, usage, transcript)
    assert usage.input_tokens == 700 and usage.output_tokens == 50
    assert usage.cost_usd == pytest.approx((700 * 1.0 + 50 * 2.0) / 1e6)
    assert transcript[0]["role"] == "system"


def test_the_fake_answers_plain_json_too(server):
    server.enqueue(reply("plain", call("read_history", {})))
    client = openai.OpenAI(max_retries=0)
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    message = completion.choices[0].message
    assert message.content == "plain" and message.tool_calls[0].function.name == "read_history"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert server.headers[0]["authorization"] == "Bearer test-key"


# --- fail fast ----------------------------------------------------------------------------------


def test_the_check_passes_for_a_served_model_and_names_every_other_problem(server, monkeypatch):
    proposer().check()
    assert server.model_lists == 1 and not server.requests  # the free model list, no completion
    with pytest.raises(UserError, match=r"does not serve model 'gpt-nine'; it serves: local-coder, other-model"):
        proposer(model="gpt-nine").check()
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    with pytest.raises(UserError, match=r"rejected the API key \(401\)"):
        proposer().check()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    server.check_fault = Fault.status(404)  # a server without /models: one tiny completion instead
    server.enqueue(reply("ok"))
    proposer().check()
    assert server.requests[-1]["max_completion_tokens"] == 1


def test_the_check_names_an_unreachable_url_and_a_missing_key(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket closes
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match=f"cannot reach the OpenAI-compatible API at http://127.0.0.1:{port}/v1"):
        proposer().check()  # no key with a base URL: a placeholder is sent, the URL is what fails
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(UserError, match="needs OPENAI_API_KEY"):
        proposer()
    with pytest.raises(UserError, match="needs --model"):
        OpenAIProposer("")
