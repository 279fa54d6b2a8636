"""Proposers: whatever edits `train.py` to propose the next experiment.

`claude` talks to the Anthropic Messages API with the text editor tool; `offline` mutates the
hyperparameter block with no LLM. Both edit through `editor.TrainPyEditor`, the only write path.
"""
