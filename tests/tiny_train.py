"""
A tiny train.py that satisfies the harness contract, for the loop's tests (trains in seconds on CPU).

A bigram language model (embedding -> linear). `build_model()` builds it; running the file trains
it for TIME_BUDGET seconds (or MAX_STEPS steps, whichever comes first) on the train split, prints progress lines and the `---` summary, and
saves the weights to $AUTORESEARCH_WEIGHTS_PATH. Tests copy it into a temporary project as train.py.
"""

import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import MAX_SEQ_LEN, SEED, TIME_BUDGET, Tokenizer, make_dataloader

# ---------------------------------------------------------------------------------------------
# Hyperparameters

MATRIX_LR = 0.005
WEIGHT_DECAY = 0.0
MODEL_DIM = 16
DEVICE_BATCH_SIZE = 8
SEQ_LEN = 64
MAX_STEPS = 40  # stop early (keeps the tests deterministic whatever the machine's speed)
LOG_EVERY = 5  # steps between progress lines


# ---------------------------------------------------------------------------------------------
# Model


class Bigram(nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, idx):
        return self.head(self.embed(idx))


def build_model(device="cpu"):
    tokenizer = Tokenizer.from_directory()
    return Bigram(tokenizer.get_vocab_size(), MODEL_DIM).to(device)


# ---------------------------------------------------------------------------------------------
# Training

if __name__ == "__main__":
    torch.manual_seed(SEED)
    t_start = time.time()
    tokenizer = Tokenizer.from_directory()
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=MATRIX_LR, weight_decay=WEIGHT_DECAY)
    loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, min(SEQ_LEN, MAX_SEQ_LEN), "train", device="cpu")
    # (experiments go here)
    step, t_train = 0, time.time()
    while True:
        x, y, epoch = next(loader)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        elapsed = time.time() - t_train
        if step % LOG_EVERY == 0:
            percent = min(100.0, 100 * elapsed / TIME_BUDGET)
            remaining = max(0.0, TIME_BUDGET - elapsed)
            print(f"step {step:05d} ({percent:.1f}%) | loss: {loss.item():.6f} | epoch: {epoch} | "
                  f"remaining: {remaining:.0f}s", flush=True)
        if elapsed >= TIME_BUDGET or step >= MAX_STEPS:
            break
    loader.close()
    torch.save(model.state_dict(), os.environ.get("AUTORESEARCH_WEIGHTS_PATH", "model.pt"))
    print("---")
    print(f"training_seconds: {time.time() - t_train:.1f}")
    print(f"total_seconds: {time.time() - t_start:.1f}")
    print(f"num_steps: {step}")
    print(f"peak_vram_mb: {0.0:.1f}")
