"""train.py: a shrunk copy really trains on CPU (loss falls, summary parses, weights round-trip and
score in the harness's evaluator), fails fast on divergence, and its optimizer matches plain
reference implementations."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoresearch import contract, evaluate
from autoresearch.knobs import read_knobs, set_knobs

REPO_ROOT = Path(__file__).resolve().parents[1]

# The knobs that shrink train.py to a model a CPU trains in seconds (with MAX_SEQ_LEN 64).
# The demo and the loop tests reuse this set.
TINY_KNOBS = {"DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32, "DEVICE_BATCH_SIZE": 4, "TOTAL_BATCH_SIZE": 2**10,
              "EVAL_BATCH_SIZE": 8}
TINY_SEQ_LEN = 64
TIME_BUDGET = 5

SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M",
                "num_steps", "num_params_M", "depth")


def make_tiny_trial(directory: Path, **knobs) -> Path:
    """train.py with TINY_KNOBS (plus `knobs`) and prepare.py beside it, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    source = set_knobs((REPO_ROOT / "train.py").read_text(), {**TINY_KNOBS, **knobs})
    (directory / "train.py").write_text(source)
    shutil.copy(REPO_ROOT / "prepare.py", directory / "prepare.py")
    return directory / "train.py"


def trial_env(dataset: Path, cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, contract.ENV_DATA_DIR: str(dataset), contract.ENV_MAX_SEQ_LEN: str(TINY_SEQ_LEN),
           contract.ENV_TIME_BUDGET: str(TIME_BUDGET), contract.ENV_DEVICE: "cpu", contract.ENV_TRAIN_ONLY: "1",
           contract.ENV_SEED: "7", contract.ENV_CACHE_DIR: str(cache)}
    env.update(extra)
    return env


def import_train(path: Path, monkeypatch, dataset: Path):
    """Import a train.py as a fresh module (with a fresh `prepare` beside it) under the tiny env."""
    monkeypatch.setenv(contract.ENV_DATA_DIR, str(dataset))
    monkeypatch.setenv(contract.ENV_MAX_SEQ_LEN, str(TINY_SEQ_LEN))
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.delitem(sys.modules, "prepare", raising=False)
    spec = importlib.util.spec_from_file_location(f"train_under_test_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delitem(sys.modules, "prepare", raising=False)
    return module


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """One real training run of the tiny train.py: (directory, completed process, weights path)."""
    directory = tmp_path_factory.mktemp("trial")
    make_tiny_trial(directory)
    weights = directory / "model.pt"
    env = trial_env(tiny_dataset, directory / "cache", **{contract.ENV_WEIGHTS_PATH: str(weights)})
    done = subprocess.run([sys.executable, "train.py"], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return directory, done, weights


@pytest.fixture
def train_module(tiny_dataset, monkeypatch):
    return import_train(REPO_ROOT / "train.py", monkeypatch, tiny_dataset)


# --- the knob block -----------------------------------------------------------------------------


def test_every_knob_is_a_literal_with_the_reference_default():
    knobs = {name: knob.value for name, knob in read_knobs((REPO_ROOT / "train.py").read_text()).items()}
    assert knobs == {
        "DEPTH": 8, "ASPECT_RATIO": 64, "HEAD_DIM": 128, "WINDOW_PATTERN": "SSSL", "TOTAL_BATCH_SIZE": 2**19,
        "DEVICE_BATCH_SIZE": 128, "EMBEDDING_LR": 0.6, "UNEMBEDDING_LR": 0.004, "MATRIX_LR": 0.04,
        "SCALAR_LR": 0.5, "WEIGHT_DECAY": 0.2, "ADAM_BETAS": (0.8, 0.95), "WARMUP_RATIO": 0.0,
        "WARMDOWN_RATIO": 0.5, "FINAL_LR_FRAC": 0.0, "COMPILE": "auto", "EVAL_BATCH_SIZE": 32,
    }


# --- a real (tiny) training run -----------------------------------------------------------------


@pytest.mark.slow
def test_training_loss_falls_and_progress_lines_match_the_contract(trained):
    _, done, _ = trained
    pattern = re.compile(contract.PROGRESS_PATTERN)
    progress = [match for line in done.stdout.splitlines() if (match := pattern.search(line))]
    assert len(progress) >= 5
    losses = [float(match["loss"]) for match in progress]
    assert losses[-1] < 0.6 * losses[0], losses
    assert float(progress[-1]["remaining"]) == 0
    assert re.search(r"^startup: imports [\d.]+s \| build [\d.]+s \| data [\d.]+s \| compile\+warmup [\d.]+s$",
                     done.stdout, re.MULTILINE)


@pytest.mark.slow
def test_the_summary_parses(trained):
    _, done, _ = trained
    tail = done.stdout.split("\n---\n", 1)[1]
    summary = dict(re.match(r"^(\w+):\s+(\S+)$", line).groups() for line in tail.strip().splitlines())
    assert tuple(summary) == SUMMARY_KEYS
    assert math.isnan(float(summary["val_bpb"]))  # the harness scores it (TRAIN_ONLY)
    assert float(summary["training_seconds"]) >= TIME_BUDGET
    assert int(summary["num_steps"]) > 10 and int(summary["depth"]) == 2
    assert "# val_bpb: nan here; the harness scores" in done.stdout


@pytest.mark.slow
def test_saved_weights_round_trip_into_build_model(trained, tiny_dataset, monkeypatch):
    directory, _, weights = trained
    train = import_train(directory / "train.py", monkeypatch, tiny_dataset)
    state = torch.load(weights, weights_only=True)
    assert all(tensor.device.type == "cpu" for tensor in state.values())
    trained_model, fresh_model = train.build_model("cpu"), train.build_model("cpu")
    trained_model.load_state_dict(state, strict=True)
    rows = evaluate.pack_eval_rows(tiny_dataset, "val", TINY_SEQ_LEN, 1024)
    batch = torch.from_numpy(rows.astype(np.int64))
    with torch.no_grad():
        logits = trained_model(batch[:, :-1])
        assert logits.shape == (len(rows), TINY_SEQ_LEN, 320) and logits.dtype == torch.float32
        assert trained_model(batch[:, :17]).shape == (len(rows), 17, 320)  # shorter contexts work too
        trained_loss = trained_model(batch[:, :-1], batch[:, 1:]).item()
        fresh_loss = fresh_model(batch[:, :-1], batch[:, 1:]).item()
    assert trained_loss < 0.5 * fresh_loss


@pytest.mark.slow
def test_run_evaluator_scores_the_trained_model(trained, tiny_dataset):
    directory, _, weights = trained
    result = evaluate.run_evaluator(directory / "train.py", weights, tiny_dataset, seq_len=TINY_SEQ_LEN,
                                    tokens=1024, device="cpu", timeout=180, log_path=directory / "eval.log")
    assert result.ok and result.causal_ok, result.reason
    # an untrained model scores about log2(320) / (bytes per token) ~ 2.5 bits per byte
    assert 0 < result.bpb < 1.2 and result.tokens > 0 and result.bytes > result.tokens


@pytest.mark.slow
def test_a_diverging_run_fails_fast_with_a_clear_message(tiny_dataset, tmp_path):
    make_tiny_trial(tmp_path, TOTAL_BATCH_SIZE=256, MATRIX_LR=1e30, EMBEDDING_LR=1e30, SCALAR_LR=1e30)
    done = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=trial_env(tiny_dataset, tmp_path / "cache"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert re.search(r"FAIL: training loss is nan at step \d+: the run diverged", done.stderr)
    assert "\n---\n" not in done.stdout


# --- model pieces -------------------------------------------------------------------------------


def test_importing_train_is_silent_and_build_model_follows_the_knobs(tiny_dataset, monkeypatch, capsys):
    train_module = import_train(REPO_ROOT / "train.py", monkeypatch, tiny_dataset)
    assert capsys.readouterr().out == ""  # no training, no prints at import
    model = train_module.build_model("cpu")
    config = model.config
    assert (config.n_layer, config.n_embd, config.n_head, config.vocab_size) == (8, 512, 4, 320)
    assert model.window_sizes == [32, 32, 32, 64, 32, 32, 32, 64]
    assert sorted(model.value_embeds) == ["1", "3", "5", "7"]  # alternating, the last layer included


def test_cuda_style_bf16_embeddings_load_into_the_evaluators_float32_cpu_model(train_module, monkeypatch):
    """On CUDA the embeddings train (and are saved) in bf16 under bf16 autocast; the evaluator may
    rebuild the model on the CPU in float32 and must compute the same function."""
    for name in ("DEPTH", "ASPECT_RATIO", "HEAD_DIM"):
        monkeypatch.setattr(train_module, name, TINY_KNOBS[name])
    torch.manual_seed(0)
    trained = train_module.build_model("cpu")
    trained.init_weights(embedding_dtype=torch.bfloat16)  # what build_model("cuda") does
    with torch.no_grad():  # away from the init's zeros, so that every weight matters
        for param in trained.parameters():
            param.add_(0.02 * torch.randn_like(param))
    assert trained.transformer.wte.weight.dtype == torch.bfloat16
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in trained.state_dict().items()}, buffer)
    buffer.seek(0)
    evaluator_model = train_module.build_model("cpu")
    evaluator_model.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert all(param.dtype == torch.float32 for param in evaluator_model.parameters())
    assert torch.equal(evaluator_model.transformer.wte.weight, trained.transformer.wte.weight.float())
    idx = torch.randint(0, 320, (2, TINY_SEQ_LEN), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the training-time numerics
            reference = trained(idx)
        scored = evaluator_model(idx)
    assert reference.dtype == scored.dtype == torch.float32
    assert (scored - reference).abs().max() < 0.05 * reference.abs().max()  # an unloaded model: ~1.0
    assert (scored.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_sliding_window_masks_agree_with_a_naive_attention(train_module):
    torch.manual_seed(0)
    T, window = 200, 70  # more than one 128-token block, so the block mask skips and crops blocks
    q, k, v = (torch.randn(2, 3, T, 16) for _ in range(3))
    scores = (q @ k.transpose(-1, -2)) / 4.0
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    scores = scores.masked_fill(~((j <= i) & (i - j < window)), float("-inf"))
    expected = scores.softmax(-1) @ v
    bands = train_module.sliding_window_bands(T, window, "cpu")
    assert len(bands.bands) > 2 and all(m is None or m.shape[1] < T for _, _, _, m in bands.bands)  # no (T, T) mask
    dense = train_module.attend(q, k, v, train_module.sliding_window_mask(T, window, "cpu"))
    assert torch.allclose(dense, expected, atol=1e-5)
    sdpa = train_module.attend(q, k, v, bands)
    flex = train_module.attend(q, k, v, train_module.sliding_window_block_mask(T, window, "cpu"))
    assert torch.allclose(sdpa, expected, atol=1e-5) and torch.allclose(flex, expected, atol=1e-5)
    for band_size in (1, 7, 70, 200):  # bands of any size, cropped at the end, give the same attention
        odd = train_module.attend(q, k, v, train_module.sliding_window_bands(T, window, "cpu", band_size))
        assert torch.allclose(odd, expected, atol=1e-5), band_size
    full = train_module.attend(q, k, v, None)
    assert torch.allclose(full, (((q @ k.transpose(-1, -2)) / 4.0).masked_fill(j > i, float("-inf"))).softmax(-1) @ v,
                          atol=1e-5)


def test_flops_count_causal_attention_as_half_the_square(train_module):
    config = train_module.GPTConfig(sequence_len=8, vocab_size=16, n_layer=2, n_head=1, n_embd=4,
                                    window_pattern="SL")
    model = train_module.GPT(config)  # windows [4, 8]
    matrices = sum(p.numel() for p in model.transformer.h.parameters()) + model.lm_head.weight.numel()
    keys_full = sum(min(i + 1, 8) for i in range(8)) / 8  # 4.5 = (T + 1) / 2
    keys_window = sum(min(i + 1, 4) for i in range(8)) / 8
    assert model.flops_per_token() == pytest.approx(6 * matrices + 12 * 4 * (keys_full + keys_window))


def test_the_schedule_follows_the_time_budget(train_module):
    assert [train_module.lr_multiplier(p) for p in (0.0, 0.49, 0.75, 1.0)] == pytest.approx([1, 1, 0.5, 0])
    assert train_module.muon_momentum(0) == pytest.approx(0.85) and train_module.muon_momentum(300) == 0.95
    assert train_module.muon_weight_decay(0.5) == pytest.approx(0.1)


def test_mfu_table_knows_the_gpu_variants(train_module):
    lookup = train_module.peak_flops_of
    assert lookup("NVIDIA H100 80GB HBM3") == 989.5e12
    assert lookup("NVIDIA H100 PCIe") == 756e12 and lookup("NVIDIA H100 NVL") == 835e12
    assert lookup("NVIDIA H200") == 989.5e12 and lookup("NVIDIA H200 NVL") == 835e12
    assert lookup("NVIDIA GH200 480GB") == 989.5e12
    assert lookup("NVIDIA A100-SXM4-80GB") == 312e12
    assert lookup("NVIDIA L40") == 181e12 and lookup("NVIDIA L40S") == 362e12 and lookup("NVIDIA L4") == 121e12
    assert lookup("NVIDIA A10") == 125e12 and lookup("NVIDIA RTX A1000") is None  # not an "A10"
    assert lookup("Some Future GPU") is None
    assert train_module.peak_flops(torch.device("cpu")) is None


# --- the optimizer against plain reference implementations --------------------------------------


def _polar_factor(G: torch.Tensor) -> torch.Tensor:
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("shape", [(48, 16), (16, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_polar_express_approximates_the_polar_factor(train_module, shape, dtype):
    G = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    X = train_module.polar_express(G, 5, dtype).double()
    polar = _polar_factor(G)
    assert ((X - polar).norm() / polar.norm()).item() < 0.15
    singular_values = torch.linalg.svdvals(X)
    assert singular_values.min() > 0.8 and singular_values.max() < 1.2
    # X shares G's singular vectors: U^T X V is diagonal up to rounding
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    core = U.mT @ X @ Vh.mT
    off_diagonal = core - torch.diag_embed(torch.diagonal(core, dim1=-2, dim2=-1))
    assert off_diagonal.abs().max() < (0.15 if dtype == torch.bfloat16 else 1e-4)


def _reference_muon(grad, param, momentum_buffer, variance, momentum, lr, weight_decay, beta2, orthogonalize):
    """One matrix, float64, written as plainly as possible (loops over rows/columns and entries)."""
    momentum_buffer = momentum * momentum_buffer + (1 - momentum) * grad
    nesterov = (1 - momentum) * grad + momentum * momentum_buffer
    update = orthogonalize(nesterov)
    rows, cols = update.shape
    by_row = rows >= cols
    scaled = update.clone()
    variance = variance.clone()
    for index in range(rows if by_row else cols):
        line = update[index, :] if by_row else update[:, index]
        variance[index] = beta2 * variance[index] + (1 - beta2) * (line**2).mean()
        if by_row:
            scaled[index, :] = line / variance[index].sqrt()
        else:
            scaled[:, index] = line / variance[index].sqrt()
    scaled = scaled * (update.norm() / scaled.norm())
    new_param = param.clone()
    for r in range(rows):
        for c in range(cols):
            decay = weight_decay if scaled[r, c] * param[r, c] >= 0 else 0.0
            new_param[r, c] = param[r, c] - lr * scaled[r, c] - lr * decay * param[r, c]
    return new_param, momentum_buffer, variance


@pytest.mark.parametrize("shape", [(12, 5), (5, 9)])
@pytest.mark.parametrize("scalars_as_tensors", [False, True])
def test_muon_update_matches_a_loop_reference(train_module, shape, scalars_as_tensors):
    generator = torch.Generator().manual_seed(2)
    n, (rows, cols) = 2, shape
    grads, params = torch.randn(n, rows, cols, generator=generator), torch.randn(n, rows, cols, generator=generator)
    momentum_buffer = torch.randn(n, rows, cols, generator=generator)
    stat_shape = (n, rows, 1) if rows >= cols else (n, 1, cols)
    second = torch.rand(stat_shape, generator=generator) + 0.1
    expected = [_reference_muon(grads[i].double(), params[i].double(), momentum_buffer[i].double(),
                                second[i].reshape(-1).double(), 0.9, 0.05, 0.3, 0.95,
                                lambda g: train_module.polar_express(g, 5, torch.float32).double())
                for i in range(n)]
    scalar = (lambda v: torch.tensor(v, dtype=torch.float32)) if scalars_as_tensors else float
    red_dim = -1 if rows >= cols else -2
    train_module.muon_update(grads.clone(), params, momentum_buffer, second, scalar(0.9), scalar(0.05), scalar(0.3),
                             scalar(0.95), 5, red_dim, torch.float32)
    for i, (new_param, new_momentum, new_variance) in enumerate(expected):
        assert torch.allclose(params[i].double(), new_param, atol=1e-5)
        assert torch.allclose(momentum_buffer[i].double(), new_momentum, atol=1e-6)
        assert torch.allclose(second[i].reshape(-1).double(), new_variance, atol=1e-6)


def test_adamw_matches_torch_adamw_and_muon_scales_tall_matrices(train_module):
    generator = torch.Generator().manual_seed(3)
    ours = torch.nn.Parameter(torch.randn(6, 4, generator=generator))
    theirs = torch.nn.Parameter(ours.detach().clone())
    optimizer = train_module.MuonAdamW([dict(kind="adamw", params=[ours], lr=0.01, betas=(0.8, 0.95), eps=1e-10,
                                              weight_decay=0.1)])
    reference = torch.optim.AdamW([theirs], lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(6, 4, generator=generator)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        optimizer.step()
        reference.step()
    assert torch.allclose(ours, theirs, atol=1e-6)

    # Muon through the optimizer: the learning rate of a tall matrix grows by sqrt(rows / cols)
    tall = torch.nn.Parameter(torch.randn(16, 4, generator=generator))
    start = tall.detach().clone()
    tall.grad = torch.randn(16, 4, generator=generator)
    muon = train_module.MuonAdamW([dict(kind="muon", params=[tall], lr=0.02, momentum=0.95, beta2=0.95, ns_steps=5,
                                        weight_decay=0.0)], orth_dtype=torch.float32)
    expected = start.clone()[None]
    train_module.muon_update(tall.grad.clone()[None], expected, torch.zeros(1, 16, 4), torch.zeros(1, 16, 1), 0.95,
                             0.02 * 2.0, 0.0, 0.95, 5, -1, torch.float32)
    muon.step()
    assert torch.allclose(tall.detach(), expected[0], atol=1e-6)


# --- dtypes on CUDA, checked on the CPU with fake CUDA tensors -----------------------------------


@contextlib.contextmanager
def cuda_bf16_autocast_without_a_gpu():
    """The dispatch state of `torch.autocast("cuda", torch.bfloat16)`, set directly.

    The context manager itself switches off (with a warning) when torch sees no GPU, but the
    autocast dispatch key works on fake CUDA tensors all the same: this is how a CPU-only machine
    sees which dtypes each op returns on CUDA.
    """
    enabled, dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", torch.bfloat16)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled("cuda", enabled)
        torch.set_autocast_dtype("cuda", dtype)


def fake_cuda(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="cuda")


def test_on_cuda_autocast_norm_keeps_bf16_where_rms_norm_returns_float32(train_module):
    """The dispatch itself, on fake CUDA tensors: what torch 2.13 does on a GPU, and what the cast undoes.

    (A whole forward pass cannot run on fake CUDA tensors here: Python indexing of a CUDA tensor
    needs a CUDA device guard, which a CPU build lacks, and a fake CUDA linear under autocast
    aborts. So the norm and the residual scaling are checked here, and the whole model, with
    rms_norm answering as it does under CUDA autocast, in the tests below.)
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), cuda_bf16_autocast_without_a_gpu():
        x = fake_cuda(2, 8, 64)
        assert x.device.type == "cuda"
        if torch.__version__ >= "2.12":
            assert torch.nn.functional.rms_norm(x, (64,)).dtype == torch.float32  # the 2.12+ behaviour
        assert train_module.norm(x).dtype == torch.bfloat16
        resid_lambda = torch.empty((), dtype=torch.float32, device="cuda")  # resid_lambdas[i]: 0-d float32
        assert (resid_lambda * x + resid_lambda * x).dtype == torch.bfloat16


def gpt_dtypes_with_cuda_like_rms_norm(train_module, monkeypatch) -> dict[str, torch.dtype]:
    """The whole small GPT in bf16 on the CPU, with rms_norm answering as it does under CUDA autocast
    (float32 out): the dtype of each block's output, the lm_head input and the logits."""
    real_rms_norm = torch.nn.functional.rms_norm
    monkeypatch.setattr(torch.nn.functional, "rms_norm", lambda *args, **kwargs: real_rms_norm(*args, **kwargs).float())
    torch.manual_seed(0)
    model = train_module.build_model("cpu")
    model.init_weights(embedding_dtype=torch.bfloat16)  # what build_model does on CUDA
    seen: dict[str, torch.dtype] = {}
    for index, block in enumerate(model.transformer.h):
        block.register_forward_hook(lambda module, args, out, index=index: seen.__setitem__(f"block {index}", out.dtype))
    model.lm_head.register_forward_hook(lambda module, args, out: seen.__setitem__("lm_head input", args[0].dtype))
    idx = torch.randint(0, 320, (2, TINY_SEQ_LEN), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # linear layers in bf16, as on CUDA
        seen["logits"] = model(idx).dtype
    return seen


def small_knobs(train_module, monkeypatch) -> None:
    for name in ("DEPTH", "ASPECT_RATIO", "HEAD_DIM"):
        monkeypatch.setattr(train_module, name, TINY_KNOBS[name])
    monkeypatch.setattr(train_module, "WINDOW_PATTERN", "SL")  # a sliding-window layer, then a full one


def test_the_residual_stream_stays_bf16_when_rms_norm_answers_float32(train_module, monkeypatch):
    small_knobs(train_module, monkeypatch)
    seen = gpt_dtypes_with_cuda_like_rms_norm(train_module, monkeypatch)
    assert seen == {"block 0": torch.bfloat16, "block 1": torch.bfloat16, "lm_head input": torch.bfloat16,
                    "logits": torch.float32}


def test_without_the_cast_the_residual_stream_would_be_float32(train_module, monkeypatch):
    """The failure the cast fixes: the plain F.rms_norm of the reference's norm()."""
    small_knobs(train_module, monkeypatch)
    monkeypatch.setattr(train_module, "norm", lambda x: torch.nn.functional.rms_norm(x, (x.size(-1),)))
    seen = gpt_dtypes_with_cuda_like_rms_norm(train_module, monkeypatch)
    assert seen["block 0"] == seen["lm_head input"] == torch.float32


def test_the_cast_leaves_cpu_numerics_bit_identical(train_module, monkeypatch):
    small_knobs(train_module, monkeypatch)
    torch.manual_seed(0)
    model = train_module.build_model("cpu")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
        idx = torch.randint(0, 320, (2, TINY_SEQ_LEN), generator=torch.Generator().manual_seed(1))
        with_cast = model(idx)
        monkeypatch.setattr(train_module, "norm", lambda x: torch.nn.functional.rms_norm(x, (x.size(-1),)))
        without_cast = model(idx)
    assert torch.equal(with_cast, without_cast)


def test_at_the_default_context_no_layer_builds_a_t_by_t_mask(train_module):
    config = train_module.GPTConfig(sequence_len=2048, vocab_size=64, n_layer=4, n_head=1, n_embd=8,
                                    window_pattern="SSSL")
    with torch.device("meta"):
        model = train_module.GPT(config)
    masks = model.attention_masks(2048, torch.device("cpu"))
    assert masks[-1] is None  # the last layer: full causal context
    assert all(isinstance(mask, train_module.WindowBands) for mask in masks[:3])
    assert max(band_mask.numel() for mask in masks[:3] for *_, band_mask in mask.bands if band_mask is not None) \
        < 2048 * 2048 // 4
