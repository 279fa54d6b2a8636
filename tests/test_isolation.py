"""The evaluator's process: what train.py's module code can reach and leave behind while it is scored.

Real `run_evaluator` calls (a real evaluator process importing a toy train.py, on the tiny
dataset). The module code of the toy prints what it could do into the evaluation log: read the
holdout split through a child shell, see the Anthropic key, start a plain child and a child in a
new session. Issue 9 items 2 and 10 (the evaluator's children survived it; it inherited the key)
and issue 12 (the evaluator may not read the holdout while scoring val).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from autoresearch import evaluate, runner, sandbox
from autoresearch.data import layout

TOY = '''import os, subprocess
import torch
import torch.nn as nn

VOCAB = {vocab}
plain = subprocess.Popen(["sleep", "300"])
session = subprocess.Popen(["sleep", "300"], start_new_session=True)
holdout = subprocess.run(["sh", "-c", "wc -c < {data}/hold''out.bin"], capture_output=True, text=True)
print("probe:", "plain", plain.pid, "session", session.pid, flush=True)
print("probe: holdout", repr(holdout.stdout.strip()), repr(holdout.stderr.strip()), flush=True)
print("probe: key", repr(os.environ.get("ANTHROPIC_API_KEY")), flush=True)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(VOCAB, VOCAB)

    def forward(self, idx):
        return self.table(idx)


def build_model(device=None):
    return Model().to(device or "cpu")
'''


@pytest.fixture
def scored(tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[evaluate.EvalResult, str]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-reach-the-evaluator")
    vocab = len(layout.read_token_bytes(tiny_dataset))
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    (worktree / "train.py").write_text(TOY.format(vocab=vocab, data=tiny_dataset))
    torch.manual_seed(0)
    weights = tmp_path / "trial-0001" / "model.pt"
    weights.parent.mkdir()
    torch.save({"table.weight": torch.randn(vocab, vocab)}, weights)
    log = tmp_path / "eval.log"
    result = evaluate.run_evaluator(worktree / "train.py", weights, tiny_dataset, seq_len=32, tokens=512,
                                    device="cpu", timeout=120, log_path=log, private_roots=(tmp_path,))
    text = log.read_text()
    pids = [int(pid) for pid in re.findall(r"(?:plain|session) (\d+)", text)]
    yield result, text
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_the_evaluator_scores_and_leaves_no_child_behind(scored: tuple[evaluate.EvalResult, str]) -> None:
    result, log = scored
    assert result.ok and result.bpb is not None, result.reason  # the sandbox does not get in scoring's way
    plain, session = (int(pid) for pid in re.search(r"plain (\d+) session (\d+)", log).groups())
    assert not runner.pid_alive(plain), "a plain child of train.py's module code outlived the evaluation"
    assert not runner.pid_alive(session), "a new-session child of train.py's module code outlived the evaluation"


def test_the_evaluator_gets_no_credentials(scored: tuple[evaluate.EvalResult, str]) -> None:
    _, log = scored
    assert "probe: key None" in log and "sk-ant-" not in log


@pytest.mark.skipif(sandbox.landlock_abi() == 0, reason="this kernel offers no Landlock: the evaluator runs "
                    "under the audit hook only, which does not see a child shell")
def test_the_evaluator_cannot_read_the_holdout_while_scoring_val(scored: tuple[evaluate.EvalResult, str]) -> None:
    _, log = scored
    line = next(line for line in log.splitlines() if line.startswith("probe: holdout"))
    assert line.startswith("probe: holdout ''") and "Permission denied" in line
