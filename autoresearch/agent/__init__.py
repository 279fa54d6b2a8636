"""Proposers: whatever edits `train.py` to propose the next experiment.

`claude` talks to the Anthropic Messages API with the text editor tool; `offline` mutates the
hyperparameter block with no LLM. Both edit through `editor.TrainPyEditor`, the only write path.
`create_proposer(name, model=..., seed=...)` picks one by name.
"""

from autoresearch.agent.factory import PROPOSER_NAMES, create_proposer

__all__ = ["PROPOSER_NAMES", "create_proposer"]
