"""autoresearch: an overnight research loop for a small GPT.

An agent edits `train.py`; the harness trains it under a fixed time budget, scores it with its
own evaluator, keeps or reverts it in git, and records every trial under `runs/`.
"""

__version__ = "0.1.0"
