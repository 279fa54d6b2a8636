"""
Pretrain a small GPT for a fixed time budget on one device. This is the file the agent edits.

    python train.py

The harness runs exactly that, with its environment variables set (see prepare.py): the time
budget, the seed, the dataset, and AUTORESEARCH_WEIGHTS_PATH, where the trained weights must be
saved. It then rebuilds the model with `build_model()`, loads those weights and scores the
logits on fixed validation tokens in a separate process. The val_bpb this file prints is
informational; the harness's number is the one that counts.

The baseline: a GPT with parameter-free RMSNorm, rotary embeddings, QK-norm, ReLU^2 MLPs, value
embeddings mixed in by input-dependent gates on alternating layers, per-layer residual and x0
scalars, untied embeddings and logit soft-capping; sliding-window attention ("SSSL"). Muon
(Polar Express orthogonalization, NorMuon variance reduction, cautious weight decay) trains the
matrices, AdamW the embeddings, the unembedding and the scalars. Learning rate and weight decay
follow the fraction of the time budget spent, so the schedule ends when the budget does.
"""

import os
import time

_T_PROCESS = time.perf_counter()

# Compiled kernels are cached on disk so that the next trial starts in seconds, not a minute.
_CACHE_ROOT = os.environ.get("AUTORESEARCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "autoresearch")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_CACHE_ROOT, "torch-compile"))
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")

import contextlib
import gc
import math
import re
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from prepare import MAX_SEQ_LEN, SEED, TIME_BUDGET, TRAIN_ONLY, Tokenizer, evaluate_bpb, make_dataloader

_T_IMPORTED = time.perf_counter()

# ---------------------------------------------------------------------------------------------
# Hyperparameters: edit these directly (plain literals: the harness reads and rewrites them)

# Model
DEPTH = 8                 # number of transformer layers: the model-size knob
ASPECT_RATIO = 64         # model_dim = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128            # attention head dimension (n_head = model_dim // HEAD_DIM)
WINDOW_PATTERN = "SSSL"   # attention window per layer, repeated: L = full context, S = half (last layer is L)

# Optimization
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (gradient accumulation over device batches)
DEVICE_BATCH_SIZE = 128   # rows per forward/backward pass (lower it if out of memory)
EMBEDDING_LR = 0.6        # token and value embeddings (AdamW)
UNEMBEDDING_LR = 0.004    # lm_head (AdamW)
MATRIX_LR = 0.04          # transformer matrices (Muon)
SCALAR_LR = 0.5           # per-layer residual and x0 scalars (AdamW)
WEIGHT_DECAY = 0.2        # cautious weight decay of Muon, decayed linearly to 0 over the budget
ADAM_BETAS = (0.8, 0.95)  # AdamW beta1, beta2
WARMUP_RATIO = 0.0        # fraction of the time budget spent warming the learning rate up
WARMDOWN_RATIO = 0.5      # fraction of the time budget spent decaying it at the end
FINAL_LR_FRAC = 0.0       # learning rate at the end, as a fraction of the peak

# Runtime
COMPILE = "auto"          # torch.compile: "auto" = on CUDA only (on CPU it costs more than it saves)
EVAL_BATCH_SIZE = 32      # rows per forward pass when evaluating (the harness's evaluator uses it too)

# ---------------------------------------------------------------------------------------------
# GPT model


@dataclass
class GPTConfig:
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    window_pattern: str


def norm(x):
    """RMSNorm without learned parameters, in the dtype of its input.

    Since torch 2.12, CUDA autocast runs rms_norm in float32 and returns float32, which would turn
    the whole residual stream float32 (more memory traffic per step). Casting back keeps it bf16
    on CUDA, as in the reference; on CPU (no autocast) the cast is a no-op.
    """
    return F.rms_norm(x, (x.size(-1),)).to(x.dtype)


def has_value_embedding(layer_idx, n_layer):
    """Value embeddings on alternating layers, always including the last one."""
    return layer_idx % 2 == (n_layer - 1) % 2


def apply_rotary(x, cos, sin):
    """Rotate channel pairs (i, i + d/2) of x (B, T, H, D) by position-dependent angles."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def sliding_window_mask(seq_len, window, device):
    """Boolean (T, T) mask for SDPA, True where query i may attend key j: j <= i < j + window."""
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(seq_len, device=device)[None, :]
    return (j <= i) & (i - j < window)


@dataclass
class WindowBands:
    """A sliding window as bands of queries, for SDPA without a (T, T) mask.

    Each band (q_start, q_end, k_start, mask) attends only to the keys its queries can reach,
    k_start .. q_end - 1, with a small boolean mask, True where query i may attend key j
    (j <= i < j + window); mask None means plain causal (the first band, when it fits the window).
    Keys outside a band's reach are never computed.
    """
    bands: list


def sliding_window_bands(seq_len, window, device, band_size=None):
    """WindowBands for a window, in bands of window // 4 queries (at least 64): on CPU the attention
    of a 1024-token window-512 layer ran 1.7x faster than one SDPA with a (T, T) mask."""
    band_size = band_size or max(64, window // 4)
    bands = []
    for q_start in range(0, seq_len, band_size):
        q_end = min(q_start + band_size, seq_len)
        k_start = max(0, q_start - window + 1)
        if q_start == 0 and q_end <= window:
            bands.append((q_start, q_end, k_start, None))
            continue
        i = torch.arange(q_start, q_end, device=device)[:, None]
        j = torch.arange(k_start, q_end, device=device)[None, :]
        bands.append((q_start, q_end, k_start, (j <= i) & (i - j < window)))
    return WindowBands(bands)


def sliding_window_block_mask(seq_len, window, device):
    """The same mask as a flex_attention BlockMask: blocks entirely outside it are skipped."""
    def causal_window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)
    return create_block_mask(causal_window, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device=device)


def attend(q, k, v, mask):
    """Causal attention of (B, H, T, D) tensors; `mask` says which kernel and which window.

    Everything here ships with PyTorch, so a trial downloads nothing:
    - None: full causal context -> SDPA with is_causal (FlashAttention / cuDNN kernels on CUDA);
    - WindowBands: a sliding window of GPT.bands_from_window keys or more without torch.compile (CPU,
      MPS, and the harness's evaluator) -> one SDPA per band of queries over the keys it can
      reach, no (T, T) mask;
    - a boolean tensor: a shorter window without torch.compile -> SDPA with that (T, T) mask;
    - a BlockMask: a sliding window under torch.compile on CUDA -> flex_attention, which compiles
      to one fused kernel that skips the blocks outside the window.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if isinstance(mask, torch.Tensor):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if isinstance(mask, WindowBands):
        return torch.cat([F.scaled_dot_product_attention(q[:, :, q0:q1], k[:, :, k0:q1], v[:, :, k0:q1],
                                                         attn_mask=band_mask, is_causal=band_mask is None)
                          for q0, q1, k0, band_mask in mask.bands], dim=2)
    return flex_attention(q, k, v, block_mask=mask)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        assert self.n_head * self.head_dim == config.n_embd
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        # value residual (ResFormer): a per-head gate, computed from the first channels of the input
        self.ve_gate_channels = min(32, config.n_embd)
        self.ve_gate = None
        if has_value_embedding(layer_idx, config.n_layer):
            self.ve_gate = nn.Linear(self.ve_gate_channels, self.n_head, bias=False)

    def forward(self, x, ve, cos_sin, mask):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))  # (B, T, H), 1 at init
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        cos, sin = cos_sin
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = norm(q).to(v.dtype), norm(k).to(v.dtype)  # QK-norm; one dtype for the attention kernel
        y = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos_sin, mask):
        x = x + self.attn(norm(x), ve, cos_sin, mask)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    bands_from_window = 256  # shorter windows: one SDPA with a (T, T) mask measured faster on CPU (bench/RESULTS.md)

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.window_sizes = self._window_sizes(config)
        self.use_flex_attention = False  # set by the training script when it compiles on CUDA
        self._mask_cache = {}
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))  # scales the residual stream
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))  # mixes the first embedding back in
        self.value_embeds = nn.ModuleDict({
            str(i): nn.Embedding(config.vocab_size, config.n_embd)
            for i in range(config.n_layer) if has_value_embedding(i, config.n_layer)
        })
        cos, sin = self._rotary_tables(config.sequence_len, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _window_sizes(config):
        pattern = config.window_pattern.upper()
        assert pattern and set(pattern) <= {"S", "L"}, f"WINDOW_PATTERN must use S and L, not {pattern!r}"
        long_window, short_window = config.sequence_len, config.sequence_len // 2
        sizes = [long_window if pattern[i % len(pattern)] == "L" else short_window for i in range(config.n_layer)]
        sizes[-1] = long_window
        return sizes

    def _rotary_tables(self, seq_len, head_dim, base=10000, device=None):
        channels = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channels / head_dim))
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, T, 1, D/2)

    @torch.no_grad()
    def init_weights(self, embedding_dtype=torch.float32):
        n_embd = self.config.n_embd
        s = 3**0.5 * n_embd**-0.5  # uniform(-s, s) has std 1/sqrt(n_embd)
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.transformer.h:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)  # 2 * sigmoid(0) = 1: a neutral gate
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)
        self.cos, self.sin = self._rotary_tables(self.config.sequence_len, n_embd // self.config.n_head,
                                                 device=self.cos.device)
        # embeddings are read, not multiplied: bf16 halves their memory traffic on GPUs
        self.transformer.wte.to(dtype=embedding_dtype)
        for ve in self.value_embeds.values():
            ve.to(dtype=embedding_dtype)

    @torch.compiler.disable
    def attention_masks(self, seq_len, device):
        """Per layer: None (full causal), or the sliding-window mask for `attend`; cached.

        Kept out of torch.compile (one graph break at the top of forward): the masks are built
        once per (length, device, kernel) and passed into the compiled graph as inputs.
        """
        key = (seq_len, str(device), self.use_flex_attention)
        if key not in self._mask_cache:
            masks = []
            for window in self.window_sizes:
                if window >= seq_len:
                    masks.append(None)
                elif self.use_flex_attention:
                    masks.append(sliding_window_block_mask(seq_len, window, device))
                elif window >= self.bands_from_window:
                    masks.append(sliding_window_bands(seq_len, window, device))
                else:
                    masks.append(sliding_window_mask(seq_len, window, device))
            self._mask_cache[key] = masks
        return self._mask_cache[key]

    def forward(self, idx, targets=None):
        seq_len = idx.size(1)
        assert seq_len <= self.cos.size(1), f"sequence length {seq_len} exceeds the model's {self.cos.size(1)}"
        masks = self.attention_masks(seq_len, idx.device)
        cos_sin = self.cos[:, :seq_len], self.sin[:, :seq_len]
        x = norm(self.transformer.wte(idx))
        x0 = x
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos_sin, masks[i])
        x = norm(x)
        softcap = 15.0
        logits = self.lm_head(x).float()
        logits = softcap * torch.tanh(logits / softcap)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward): 6 per matrix weight, plus attention.

        Embedding lookups and the scalars cost no matmul FLOPs. Attention counts only the
        query-key pairs a causal (or sliding-window) layer really computes: query i sees
        min(i + 1, window) keys, so a full causal layer costs half of the T x T square. (The
        reference counts min(window, T) keys for every query: ~10% more FLOPs at the default shape,
        so its MFU figures read ~10% higher than this file's for the same speed.)
        """
        embeddings = self.transformer.wte.weight.numel() + sum(ve.weight.numel() for ve in self.value_embeds.values())
        scalars = self.resid_lambdas.numel() + self.x0_lambdas.numel()
        matrix_params = self.num_params() - embeddings - scalars
        T = self.config.sequence_len
        attention = 0.0
        for window in self.window_sizes:
            w = min(window, T)
            keys_per_query = (w * (w + 1) / 2 + (T - w) * w) / T
            attention += 12 * self.config.n_embd * keys_per_query  # QK^T and AV, forward + backward
        return 6 * matrix_params + attention


def model_config(vocab_size):
    """The architecture the knobs describe."""
    model_dim = -(-DEPTH * ASPECT_RATIO // HEAD_DIM) * HEAD_DIM  # round up to a whole number of heads
    return GPTConfig(sequence_len=MAX_SEQ_LEN, vocab_size=vocab_size, n_layer=DEPTH,
                     n_head=model_dim // HEAD_DIM, n_embd=model_dim, window_pattern=WINDOW_PATTERN)


def detect_device():
    """$AUTORESEARCH_DEVICE (auto | cuda | cpu | mps); auto prefers CUDA, then MPS, then CPU."""
    wanted = os.environ.get("AUTORESEARCH_DEVICE", "auto").strip().lower() or "auto"
    if wanted != "auto":
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_model(device=None):
    """The trained architecture, freshly initialized: the harness loads the saved weights into it.

    Keep this function: the evaluator calls build_model(device=...) and then model(idx) -> logits
    of shape (B, T, vocab) for any T <= MAX_SEQ_LEN, under bf16 autocast on CUDA.
    """
    device = torch.device(device) if device is not None else detect_device()
    vocab_size = Tokenizer.from_directory().get_vocab_size()
    with torch.device("meta"):
        model = GPT(model_config(vocab_size))
    model.to_empty(device=device)
    model.init_weights(embedding_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    return model


# ---------------------------------------------------------------------------------------------
# Optimizer: Muon for the transformer's matrices, AdamW for everything else

# Polar Express: five odd matrix polynomials a*X + b*(X X^T) X + c*(X X^T)^2 X, each tuned to pull
# the singular values of X towards 1 as fast as possible; together they approximate the polar
# factor U V^T of G = U S V^T in bfloat16.
POLAR_EXPRESS_COEFFS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def polar_express(G, steps=5, dtype=torch.bfloat16):
    """Approximately orthogonalize the last two dimensions of G (its polar factor U V^T)."""
    X = G.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # singular values now below 1
    tall = X.size(-2) > X.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        if tall:  # work with the smaller Gram matrix
            A = X.mT @ X
            X = a * X + X @ (b * A + c * (A @ A))
        else:
            A = X @ X.mT
            X = a * X + (b * A + c * (A @ A)) @ X
    return X


def muon_update(grads, params, momentum_buffer, second_momentum_buffer, momentum, lr, weight_decay,
                beta2, ns_steps, red_dim, orth_dtype=torch.bfloat16):
    """One Muon step on a stack of same-shape matrices (N, rows, cols), in place.

    1. Nesterov momentum. 2. Polar Express orthogonalization. 3. NorMuon: each row (or column,
    along `red_dim`) is divided by the square root of an EMA of its mean square, then the whole
    update is rescaled back to its Frobenius norm before step 3. 4. Cautious weight decay: decay
    only the weights whose update points the same way as the weight. The scalars may be floats or
    0-d tensors (compiled runs pass 0-d CPU tensors so that new values need no recompile).
    """
    momentum_buffer.lerp_(grads, 1 - momentum)
    g = grads.lerp_(momentum_buffer, momentum)
    g = polar_express(g, ns_steps, orth_dtype).float()
    v_mean = g.square().mean(dim=red_dim, keepdim=True)  # (N, rows, 1) or (N, 1, cols)
    red_dim_size = g.size(red_dim)
    norm_before = (v_mean.sum(dim=(-2, -1), keepdim=True) * red_dim_size).sqrt()
    second_momentum_buffer.lerp_(v_mean.to(second_momentum_buffer.dtype), 1 - beta2)
    step_size = second_momentum_buffer.float().clamp_min(1e-10).rsqrt()
    norm_after = ((v_mean * red_dim_size) * step_size.square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    g = g * (step_size * (norm_before / norm_after.clamp_min(1e-10)))
    decay = (g * params >= 0).to(g.dtype)
    params.sub_((lr * g + lr * weight_decay * params * decay).to(params.dtype))


def adamw_update(p, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW step (decoupled weight decay, bias-corrected moments), in place."""
    p.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    denom = (exp_avg_sq / (1 - beta2**step)).sqrt() + eps
    p.add_(-(lr / (1 - beta1**step)) * (exp_avg / denom))


class MuonAdamW(torch.optim.Optimizer):
    """Param groups of kind 'adamw' (lr, betas, eps, weight_decay) or 'muon' (same-shape matrices:
    lr, momentum, beta2, ns_steps, weight_decay). Single device only."""

    def __init__(self, param_groups, compiled=False, orth_dtype=torch.bfloat16):
        super().__init__(param_groups, defaults={})
        self.compiled = compiled
        self.orth_dtype = orth_dtype
        if compiled:
            self._adamw = torch.compile(adamw_update, dynamic=False, fullgraph=True)
            self._muon = torch.compile(muon_update, dynamic=False, fullgraph=True)
        else:
            self._adamw, self._muon = adamw_update, muon_update
        self._scalars = {}

    def _scalar(self, name, value):
        """Floats when eager; refilled 0-d CPU tensors when compiled (no recompiles)."""
        if not self.compiled:
            return float(value)
        if name not in self._scalars:
            self._scalars[name] = torch.zeros((), dtype=torch.float32)
        self._scalars[name].fill_(value)
        return self._scalars[name]

    def _step_adamw(self, group):
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            beta1, beta2 = group["betas"]
            self._adamw(p, p.grad, state["exp_avg"], state["exp_avg_sq"], self._scalar("step", state["step"]),
                        self._scalar("lr", group["lr"]), self._scalar("beta1", beta1), self._scalar("beta2", beta2),
                        self._scalar("eps", group["eps"]), self._scalar("wd", group["weight_decay"]))

    def _step_muon(self, group):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        rows, cols = params[0].shape
        state = self.state[params[0]]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros(len(params), rows, cols, dtype=params[0].dtype, device=params[0].device)
            stat_shape = (len(params), rows, 1) if rows >= cols else (len(params), 1, cols)
            state["second_momentum_buffer"] = torch.zeros(stat_shape, dtype=torch.float32, device=params[0].device)
        red_dim = -1 if rows >= cols else -2
        stacked_grads = torch.stack([p.grad for p in params])
        stacked_params = torch.stack(params)
        lr = group["lr"] * max(1.0, rows / cols) ** 0.5  # tall matrices take larger steps
        self._muon(stacked_grads, stacked_params, state["momentum_buffer"], state["second_momentum_buffer"],
                   self._scalar("momentum", group["momentum"]), self._scalar("muon_lr", lr),
                   self._scalar("muon_wd", group["weight_decay"]), self._scalar("muon_beta2", group["beta2"]),
                   group["ns_steps"], red_dim, self.orth_dtype)
        torch._foreach_copy_(params, list(stacked_params.unbind(0)))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            else:
                self._step_muon(group)


def setup_optimizer(model, compiled, orth_dtype):
    """AdamW learning rates scale as 1/sqrt(model_dim) (tuned at 768); Muon groups by shape."""
    dmodel_lr_scale = (model.config.n_embd / 768) ** -0.5
    adam = dict(kind="adamw", betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0)
    groups = [
        dict(adam, params=list(model.lm_head.parameters()), lr=UNEMBEDDING_LR * dmodel_lr_scale),
        dict(adam, params=list(model.transformer.wte.parameters()), lr=EMBEDDING_LR * dmodel_lr_scale),
        dict(adam, params=list(model.value_embeds.parameters()), lr=EMBEDDING_LR * dmodel_lr_scale),
        dict(adam, params=[model.resid_lambdas], lr=SCALAR_LR * 0.01),
        dict(adam, params=[model.x0_lambdas], lr=SCALAR_LR, betas=(0.96, 0.95)),
    ]
    matrices = list(model.transformer.h.parameters())
    for shape in sorted({p.shape for p in matrices}):
        groups.append(dict(kind="muon", params=[p for p in matrices if p.shape == shape], lr=MATRIX_LR,
                           momentum=0.95, beta2=0.95, ns_steps=5, weight_decay=WEIGHT_DECAY))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())), "a parameter has no group"
    optimizer = MuonAdamW(groups, compiled=compiled, orth_dtype=orth_dtype)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


# ---------------------------------------------------------------------------------------------
# Schedules: by progress = training seconds / TIME_BUDGET, so they end when the budget does


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


def muon_momentum(step):
    frac = min(step / 300, 1)
    return (1 - frac) * 0.85 + frac * 0.95


def muon_weight_decay(progress):
    return WEIGHT_DECAY * (1 - progress)


# ---------------------------------------------------------------------------------------------
# Hardware: peak dense bf16 FLOP/s by device name, for MFU (None: unknown, MFU not reported)

PEAK_BF16_FLOPS = [  # matched as whole words of the device name; the first match wins, so variants come first
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.5e12), ("H200 NVL", 835e12), ("H200", 989.5e12),
    ("GH200", 989.5e12), ("H800 PCIe", 756e12), ("H800", 989.5e12), ("B200", 2250e12), ("A100", 312e12),
    ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("RTX A6000", 155e12), ("RTX 6000 Ada", 364e12),
]


def peak_flops_of(device_name):
    """Peak dense bf16 FLOP/s of a device name such as "NVIDIA H100 80GB HBM3", or None.

    Whole words only, so that "L40" is not read as an "L4" and "GH200" not as an "H200".
    """
    return next((flops for key, flops in PEAK_BF16_FLOPS
                 if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name)), None)


def peak_flops(device):
    return peak_flops_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def fail(message):
    """Stop the run at once, non-zero, so a broken trial costs seconds instead of the budget."""
    print(f"\nFAIL: {message}", flush=True)
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Training

if __name__ == "__main__":
    t_start = time.perf_counter()
    device = detect_device()
    torch.manual_seed(SEED)
    if device.type == "cuda":
        torch.cuda.manual_seed(SEED)
        torch.set_float32_matmul_precision("high")
    use_compile = device.type == "cuda" if COMPILE == "auto" else bool(COMPILE)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    interactive = sys.stdout.isatty()

    tokenizer = Tokenizer.from_directory()
    raw_model = build_model(device)
    raw_model.use_flex_attention = use_compile and device.type == "cuda"
    num_params = raw_model.num_params()
    flops_per_token = raw_model.flops_per_token()
    config = raw_model.config
    print(f"device: {device} | compile: {use_compile} | seed: {SEED} | time budget: {TIME_BUDGET:.0f}s")
    print(f"model: depth {config.n_layer} | dim {config.n_embd} | heads {config.n_head} | vocab {config.vocab_size:,} "
          f"| windows {raw_model.window_sizes} | params {num_params:,} | FLOPs/token {flops_per_token:.3e}")

    tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    grad_accum_steps = max(1, TOTAL_BATCH_SIZE // tokens_per_fwdbwd)
    tokens_per_step = grad_accum_steps * tokens_per_fwdbwd
    print(f"batch: {tokens_per_step:,} tokens per step = {grad_accum_steps} x {DEVICE_BATCH_SIZE} x {MAX_SEQ_LEN}")
    optimizer = setup_optimizer(raw_model, compiled=use_compile,
                                orth_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = torch.compile(raw_model, dynamic=False) if use_compile else raw_model
    t_built = time.perf_counter()

    train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train", device)
    x, y, epoch = next(train_loader)
    t_data = time.perf_counter()

    peak = peak_flops(device)
    warmup_steps = 10  # the first steps compile and warm up: they are not on the training clock
    smooth_loss = 0.0
    training_time = 0.0
    timed_steps = 0
    step = 0
    last_log = 0.0
    while True:
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(grad_accum_steps):
            with autocast:
                loss = model(x, y)
            train_loss = loss.detach()
            (loss / grad_accum_steps).backward()
            x, y, epoch = next(train_loader)

        progress = min(training_time / TIME_BUDGET, 1.0)
        lrm = lr_multiplier(progress)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if group["kind"] == "muon":
                group["momentum"] = muon_momentum(step)
                group["weight_decay"] = muon_weight_decay(progress)
        optimizer.step()
        model.zero_grad(set_to_none=True)

        loss_value = train_loss.item()
        if not math.isfinite(loss_value) or loss_value > 100:
            fail(f"training loss is {loss_value} at step {step}: the run diverged (try lower learning rates)")
        synchronize(device)
        dt = time.perf_counter() - t0
        if step >= warmup_steps:
            training_time += dt
            timed_steps += 1
        elif step == warmup_steps - 1:
            t_warm = time.perf_counter()
            print(("\n" if interactive else "") + f"startup: imports {_T_IMPORTED - _T_PROCESS:.1f}s | build "
                  f"{t_built - t_start:.1f}s | data {t_data - t_built:.1f}s | compile+warmup {t_warm - t_data:.1f}s",
                  flush=True)

        ema = 0.9
        smooth_loss = ema * smooth_loss + (1 - ema) * loss_value
        debiased_loss = smooth_loss / (1 - ema ** (step + 1))
        mfu = f"{100 * flops_per_token * tokens_per_step / dt / peak:.1f}%" if peak else "n/a"
        remaining = max(0.0, TIME_BUDGET - training_time)
        done = step >= warmup_steps and training_time >= TIME_BUDGET
        line = (f"step {step:05d} ({100 * progress:.1f}%) | loss: {debiased_loss:.6f} | lrm: {lrm:.2f} | "
                f"dt: {dt * 1000:.0f}ms | tok/sec: {int(tokens_per_step / dt):,} | mfu: {mfu} | epoch: {epoch} | "
                f"remaining: {remaining:.0f}s")
        if interactive:
            print(f"\r{line}    ", end="", flush=True)
        elif step < warmup_steps or done or time.perf_counter() - last_log >= 1.0:  # a log file: ~1 line/s
            print(line, flush=True)
            last_log = time.perf_counter()

        if step == 0:  # Python's GC causes stalls of ~0.5 s; nothing allocated from here on needs it
            gc.collect()
            gc.freeze()
            gc.disable()
        elif (step + 1) % 5000 == 0:
            gc.collect()
        step += 1
        if done:
            break
    if interactive:
        print()
    close = getattr(train_loader, "close", None)
    if close is not None:
        close()

    weights_path = os.environ.get("AUTORESEARCH_WEIGHTS_PATH")
    if weights_path:
        state = {name: tensor.detach().cpu() for name, tensor in raw_model.state_dict().items()}
        torch.save(state, weights_path + ".tmp")
        os.replace(weights_path + ".tmp", weights_path)
        print(f"weights: saved to {weights_path}")

    if TRAIN_ONLY:
        val_bpb = float("nan")
        print("# val_bpb: nan here; the harness scores the saved weights with its own evaluator")
    else:
        model.eval()
        with autocast:
            val_bpb = evaluate_bpb(model, tokenizer, EVAL_BATCH_SIZE)

    t_end = time.perf_counter()
    steady_mfu = 100 * flops_per_token * tokens_per_step * timed_steps / training_time / peak if peak and training_time else 0.0
    peak_vram_mb = torch.cuda.max_memory_allocated() / 1024 / 1024 if device.type == "cuda" else 0.0
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {t_end - _T_PROCESS:.1f}")
    print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
    print(f"mfu_percent:      {steady_mfu:.2f}")
    print(f"total_tokens_M:   {step * tokens_per_step / 1e6:.1f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")
