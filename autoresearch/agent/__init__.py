"""Proposers: whatever edits `train.py` to propose the next experiment.

`claude` talks to the Anthropic Messages API with the text editor tool; `openai` to any
OpenAI-compatible Chat Completions endpoint with the same editor as functions; `command` runs a
coding-agent CLI in the worktree; `offline` mutates the hyperparameter block with no LLM. The LLM
agents edit through `editor.TrainPyEditor`, the only write path they have; the command agent's
edits are checked by the loop's validation like every proposal. `create_proposer(name, ...)`
picks one by name; `factory.prepare_proposer(config, ...)` also runs the checks made before a
run's baseline.
"""

from autoresearch.agent.factory import PROPOSER_NAMES, create_proposer

__all__ = ["PROPOSER_NAMES", "create_proposer"]
