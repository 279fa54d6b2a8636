"""The environment of every process the harness starts: training, the evaluator, holdout scoring.

`child_env(extra)` is the one place that decides what a child inherits from the harness: the
harness's environment minus credentials (the Anthropic key and anything named like an API key,
token, password or secret), plus the settings every child gets (`PYTHONDONTWRITEBYTECODE`,
`PYTHONUNBUFFERED`), plus `extra`. A process that needs a credential (an agent command) names it
in `keep`, and only that one passes.

What this does not protect against: a credential under a name that looks harmless (say
`MY_KEY_FILE` pointing at a file; the file stays readable unless the sandbox denies it), or
secrets the child can reach some other way (a home directory, a cloud metadata endpoint). The
sandbox (sandbox.py) is what limits the files and the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

# Names that carry credentials: never inherited unless a caller keeps them by name.
_CREDENTIAL_NAMES = re.compile(r"^ANTHROPIC_|API_?KEY|(^|_)TOKEN($|_)|SECRET|PASSWORD|PASSWD|CREDENTIAL|(^|_)AUTH($|_)",
                               re.IGNORECASE)
_ALWAYS = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def is_credential(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential."""
    return bool(_CREDENTIAL_NAMES.search(name))


def child_env(extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None,
              keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment for a child process: `base` (default: ours) without credentials, plus `extra`.

    `keep` names credentials that this child needs (an agent command's API key). `extra` wins
    over everything, and is never filtered: the caller chose it.
    """
    source = os.environ if base is None else base
    kept = set(keep)
    env = {name: value for name, value in source.items() if name in kept or not is_credential(name)}
    env.update(_ALWAYS)
    env.update(extra or {})
    return env
