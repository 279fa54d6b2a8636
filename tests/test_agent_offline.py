"""The offline proposer: deterministic one-line knob mutations that never repeat a tried value."""

from __future__ import annotations

import difflib
import random
from pathlib import Path

import pytest

from autoresearch import knobs
from autoresearch.agent.base import HistoryRow, ProposalContext
from autoresearch.agent.offline import (
    DESCRIPTION,
    LR_MULTIPLIERS,
    OfflineProposer,
    candidates,
    knob_weight,
    layer_windows,
    tried_values,
)
from autoresearch.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
PREPARE_PY = "import os\nMAX_SEQ_LEN = int(os.environ.get('AUTORESEARCH_MAX_SEQ_LEN') or 2048)\n"
TRAIN_PY = """\
import torch

# model
DEPTH = 8                 # layers
ASPECT_RATIO = 64         # width per layer
HEAD_DIM = 128
WINDOW_PATTERN = "SSSL"   # windows

# optimization
TOTAL_BATCH_SIZE = 2**19  # tokens per step
DEVICE_BATCH_SIZE = 128   # rows per pass
EMBEDDING_LR = 0.6
MATRIX_LR = 0.04          # Muon
WEIGHT_DECAY = 0.2
ADAM_BETAS = (0.8, 0.95)
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.0

model_dim = DEPTH * ASPECT_RATIO
print("MATRIX_LR = 0.04 is not a knob line")
"""


def make_context(tmp_path: Path, source: str = TRAIN_PY, history: list[HistoryRow] | None = None,
                 trial_number: int = 1, **fields) -> ProposalContext:
    worktree = tmp_path / f"worktree-{len(list(tmp_path.iterdir()))}"
    worktree.mkdir()
    (worktree / "train.py").write_text(source)
    history = history or [HistoryRow(0, "baseline", 1.0, None, "keep")]
    return ProposalContext(worktree=worktree, program_md="", prepare_py=PREPARE_PY, best_train_py=source,
                           best_val_bpb=1.0, history=history,
                           trial_number=trial_number, **fields)


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_same_seed_and_history_same_edit_and_only_the_knob_line_changes(tmp_path):
    first, second = make_context(tmp_path), make_context(tmp_path)
    a, b = OfflineProposer(seed=5).propose(first), OfflineProposer(seed=5).propose(second)
    assert a.description == b.description
    edited = (first.worktree / "train.py").read_text()
    assert edited == (second.worktree / "train.py").read_text() != TRAIN_PY
    removed, added = changed_lines(TRAIN_PY, edited)
    match = DESCRIPTION.match(a.description)
    assert match, a.description
    knob, old, new = match.groups()
    assert removed.startswith(f"-{knob} = {old}") and added.startswith(f"+{knob} = {new}")
    assert removed.split("#")[1:] == added.split("#")[1:]  # the comment survives
    assert knobs.read_knobs(edited)[knob].value != knobs.read_knobs(TRAIN_PY)[knob].value
    assert a.usage.as_tokens() == {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    assert a.usage.cost_usd == 0.0 and a.transcript[0]["knob"] == knob
    others = {OfflineProposer(seed=seed).propose(make_context(tmp_path)).description for seed in range(6)}
    assert len(others) > 1  # the seed matters


def test_never_repeats_a_tried_mutation_over_a_long_walk(tmp_path):
    history = [HistoryRow(0, "baseline", 1.0, None, "keep")]
    proposer = OfflineProposer(seed=1)
    seen = set()
    for trial in range(1, 61):
        context = make_context(tmp_path, history=list(history), trial_number=trial)
        description = proposer.propose(context).description
        knob, _, new = DESCRIPTION.match(description).groups()
        pair = (knob, knobs.read_knobs(f"X = {new}\n")["X"].value)
        assert pair not in seen, description
        seen.add(pair)
        history.append(HistoryRow(trial, description, 1.0 + trial / 1000, trial / 1000, "discard"))
    assert len({knob for knob, _ in seen}) >= 8  # it explores many knobs, not one


def test_tried_values_normalize_how_a_value_is_written():
    rows = [HistoryRow(1, "TOTAL_BATCH_SIZE 2**19 -> 2**20", 1.0, 0.0, "discard"),
            HistoryRow(2, "MATRIX_LR 0.04 -> 0.06 (repair: out of memory)", 1.0, 0.0, "discard"),
            HistoryRow(3, "Use rotary embeddings everywhere", 1.0, 0.0, "keep")]
    tried = tried_values(rows)
    assert tried == {("TOTAL_BATCH_SIZE", repr(float(2**20))), ("MATRIX_LR", "0.06")}


def test_batch_sizes_keep_whole_gradient_accumulation(tmp_path):
    one_pass = knobs.read_knobs(TRAIN_PY.replace("2**19", "2**18"))
    # 2**18 tokens = one pass of 128 rows x 2048: a smaller total or more rows would not divide.
    assert candidates(one_pass, PREPARE_PY)["TOTAL_BATCH_SIZE"] == [2**19]
    assert candidates(one_pass, PREPARE_PY)["DEVICE_BATCH_SIZE"] == [64]
    assert candidates(one_pass, PREPARE_PY, ring=1)["DEVICE_BATCH_SIZE"] == [32]
    found = knobs.read_knobs(TRAIN_PY)
    options = candidates(found, PREPARE_PY)
    assert options["TOTAL_BATCH_SIZE"] == [2**18, 2**20] and options["DEVICE_BATCH_SIZE"] == [64, 256]
    assert options["WINDOW_PATTERN"] == ["L", "SL", "SSL", "SSSSL"]
    assert "ADAM_BETAS" not in options and "HEAD_DIM" not in options
    history = [HistoryRow(0, "baseline", 1.0, None, "keep"),
               *[HistoryRow(i, f"{name} x -> {value!r}", 1.0, 0.0, "discard")
                 for i, (name, values) in enumerate(options.items(), start=1)
                 for value in values if name != "TOTAL_BATCH_SIZE"],
               HistoryRow(90, "TOTAL_BATCH_SIZE 2**19 -> 2**18", 1.0, 0.0, "discard")]
    context = make_context(tmp_path, history=history)
    description = OfflineProposer().propose(context).description
    assert description == "TOTAL_BATCH_SIZE 2**19 -> 2**20"  # the power-of-two spelling is kept
    assert "TOTAL_BATCH_SIZE = 2**20  # tokens per step" in (context.worktree / "train.py").read_text()


def test_works_with_a_few_knobs_and_refuses_when_none_apply(tmp_path):
    sparse = "import torch\nMATRIX_LR = 0.02\nmodel = build(MATRIX_LR)\n"
    context = make_context(tmp_path, source=sparse)
    description = OfflineProposer(seed=2).propose(context).description
    assert description.startswith("MATRIX_LR 0.02 -> ")
    assert (context.worktree / "train.py").read_text().endswith("model = build(MATRIX_LR)\n")
    with pytest.raises(UserError, match="nothing left to try"):
        OfflineProposer().propose(make_context(tmp_path, source="import torch\nHEAD_DIM = 128\nx = 1\n"))
    lookalike = "import torch\nMAX_DEPTH = 8\nDEPTH = 8\n"  # the DEPTH line also occurs inside another
    context = make_context(tmp_path, source=lookalike)
    description = OfflineProposer().propose(context).description
    assert (context.worktree / "train.py").read_text() == lookalike.replace("\nDEPTH = 8", "\nDEPTH = " +
                                                                            description.split()[-1])
    multipliers = [*LR_MULTIPLIERS[0], *LR_MULTIPLIERS[1]]  # both rings
    every_lr = [HistoryRow(i, f"MATRIX_LR 0.02 -> {float(f'{0.02 * m:.3g}')}", 1.0, 0.0, "discard")
                for i, m in enumerate(multipliers, start=1)]
    last_one = OfflineProposer().propose(make_context(tmp_path, source=sparse, history=every_lr[:-1]))
    assert last_one.description == "MATRIX_LR 0.02 -> 0.08"
    with pytest.raises(UserError, match="nothing left to try"):
        OfflineProposer().propose(make_context(tmp_path, source=sparse, history=every_lr))


def test_repair_after_out_of_memory_halves_the_device_batch(tmp_path):
    crashed = TRAIN_PY.replace("DEVICE_BATCH_SIZE = 128", "DEVICE_BATCH_SIZE = 256")
    context = make_context(tmp_path, source=crashed, repair_attempt=1,
                           last_crash_tail="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate")
    context.best_train_py = TRAIN_PY
    proposal = OfflineProposer().propose(context)
    assert proposal.description == "DEVICE_BATCH_SIZE 256 -> 128 (repair: out of memory)"
    assert "DEVICE_BATCH_SIZE = 128   # rows per pass" in (context.worktree / "train.py").read_text()


def test_repair_after_another_crash_goes_the_other_way_or_starts_over(tmp_path):
    crashed = TRAIN_PY.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.08")
    context = make_context(tmp_path, source=crashed, repair_attempt=1, last_crash_tail="loss is nan")
    context.best_train_py = TRAIN_PY
    description = OfflineProposer().propose(context).description
    assert description == "MATRIX_LR 0.08 -> 0.02 (repair: the other direction)"
    # A crashed train.py that does not even parse: back to the best one, and a different change.
    broken = TRAIN_PY.replace("import torch", "import torch(")
    context = make_context(tmp_path, source=broken, repair_attempt=1, last_crash_tail="SyntaxError")
    context.best_train_py = TRAIN_PY
    description = OfflineProposer().propose(context).description
    assert description.endswith("(repair: a different change)")
    edited = (context.worktree / "train.py").read_text()
    assert len(changed_lines(TRAIN_PY, edited)) == 2 and "import torch\n" in edited


def test_runs_on_the_repository_train_py(tmp_path):
    train_py = REPO_ROOT / "train.py"
    if not train_py.exists():
        pytest.skip("no train.py in the repository yet")
    source = train_py.read_text()
    context = make_context(tmp_path, source=source)
    context.prepare_py = (REPO_ROOT / "prepare.py").read_text()
    description = OfflineProposer().propose(context).description
    assert DESCRIPTION.match(description)
    assert len(changed_lines(source, (context.worktree / "train.py").read_text())) == 2


def test_window_patterns_that_give_the_same_layers_are_never_proposed(tmp_path):
    # train.py repeats the pattern over the layers and makes the last one L: at 2 layers every
    # pattern ending in L gives (S, L) unless it is all L.
    assert {layer_windows(p, 2) for p in ("SSSL", "SL", "SSL", "SSSSL", "ssl")} == {("S", "L")}
    assert layer_windows("L", 2) == ("L", "L") and layer_windows("SSL", 3) == ("S", "S", "L")
    assert layer_windows("SL", 3) == ("S", "L", "L") and layer_windows("SSSL", None) == "SSSL"
    two_layers = knobs.read_knobs(TRAIN_PY.replace("DEPTH = 8 ", "DEPTH = 2 "))
    assert candidates(two_layers, PREPARE_PY)["WINDOW_PATTERN"] == ["L"]
    assert "WINDOW_PATTERN" not in candidates(two_layers, PREPARE_PY, ring=1)
    three_layers = "import torch\nDEPTH = 3\nWINDOW_PATTERN = \"SSSL\"\n"
    assert candidates(knobs.read_knobs(three_layers), PREPARE_PY)["WINDOW_PATTERN"] == ["L", "SL"]
    # Every DEPTH tried, and "SLL" (the windows of "SL" at 3 layers): only "SL" is left, and it is a repeat.
    depths = [HistoryRow(i, f"DEPTH 3 -> {d}", 1.0, 0.0, "discard") for i, d in enumerate((1, 2, 4, 5, 6), start=1)]
    tried_l = HistoryRow(8, 'WINDOW_PATTERN "SSSL" -> "L"', 1.0, 0.0, "discard")
    left = OfflineProposer().propose(make_context(tmp_path, source=three_layers, history=[*depths, tried_l]))
    assert left.description == "WINDOW_PATTERN \"SSSL\" -> 'SL'"
    same_windows = HistoryRow(9, 'WINDOW_PATTERN "SSSL" -> "SLL"', 1.0, 0.0, "discard")
    with pytest.raises(UserError, match="nothing left to try"):
        OfflineProposer().propose(make_context(tmp_path, source=three_layers, history=[*depths, tried_l, same_windows]))


def test_learning_rates_are_drawn_more_often_and_the_device_batch_less():
    assert knob_weight("MATRIX_LR") == knob_weight("EMBEDDING_LR") > knob_weight("DEPTH") > knob_weight("DEVICE_BATCH_SIZE")
    found = knobs.read_knobs(TRAIN_PY)
    options = candidates(found, PREPARE_PY)
    lr_share_if_uniform = sum(name.endswith("_LR") for name in options) / len(options)  # 2 of 10 knobs
    picks = [OfflineProposer()._choose(TRAIN_PY, PREPARE_PY, set(), random.Random(seed)).knob for seed in range(400)]
    lr_share = sum(name.endswith("_LR") for name in picks) / len(picks)
    assert lr_share > 1.8 * lr_share_if_uniform  # expected 6 / 13.5 = 0.44 vs 0.2
    assert picks.count("DEVICE_BATCH_SIZE") < picks.count("DEPTH")
    assert set(picks) == set(options)  # every knob still gets its turn


def test_a_walk_on_the_demo_sized_train_py_changes_the_model_every_time(tmp_path):
    train_py = REPO_ROOT / "train.py"
    if not train_py.exists():
        pytest.skip("no train.py in the repository yet")
    from autoresearch.demo import DEMO_KNOBS

    source = knobs.set_knobs(train_py.read_text(), DEMO_KNOBS)
    depth = knobs.read_knobs(source)["DEPTH"].value
    prepare_py = (REPO_ROOT / "prepare.py").read_text()
    windows = [layer_windows(knobs.read_knobs(source)["WINDOW_PATTERN"].value, depth)]
    tried: set[tuple[str, str]] = set()
    for trial in range(1, 26):  # _choose, as propose calls it, without the edits (0.3 s each on this file)
        mutation = OfflineProposer(seed=42)._choose(source, prepare_py, tried, random.Random(f"walk:{trial}"))
        if mutation.knob == "WINDOW_PATTERN":
            windows.append(layer_windows(mutation.new_value, depth))
        tried |= tried_values([HistoryRow(trial, mutation.describe(), 1.01, 0.01, "discard")])
    assert len(windows) == len(set(windows)) >= 2  # a pattern was tried, none left the layers as they were
