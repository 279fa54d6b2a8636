"""The offline proposer: a seeded random walk over train.py's hyperparameter block, no LLM.

Each proposal changes one knob on one line, through the same `TrainPyEditor.str_replace` the
Claude agent uses: a learning rate scaled by 0.5x..2x, WEIGHT_DECAY / WARMDOWN_RATIO /
WARMUP_RATIO / FINAL_LR_FRAC to a nearby value, DEPTH +-1, ASPECT_RATIO +-25%, DEVICE_BATCH_SIZE
or TOTAL_BATCH_SIZE halved or doubled (keeping TOTAL_BATCH_SIZE a multiple of one forward pass's
tokens when it was one), or WINDOW_PATTERN swapped for another S/L pattern. Knobs train.py does
not have are skipped. Descriptions read `KNOB old -> new`, and a (knob, value) pair any earlier
trial's description names is never proposed again. The choice is a function of the seed and the
history only, so a run replays exactly.

The search order: a knob is drawn at random with a weight, then one of its untried values. The
learning rates (every `*_LR` knob) weigh LR_WEIGHT (3) each, since they are generally the most
sensitive knobs of a transformer at a fixed budget; DEVICE_BATCH_SIZE weighs DEVICE_BATCH_WEIGHT
(0.5), since with TOTAL_BATCH_SIZE fixed it changes only the rows per forward pass (the optimizer
sees the same gradient), so it moves the score only through throughput; every other knob weighs 1.
A mutation that cannot change the trained model is never proposed: a WINDOW_PATTERN whose
per-layer windows at the current DEPTH equal the current ones (or those of a pattern already tried),
computed the way train.py does it (the pattern repeated over the layers, the last layer always L):
at DEPTH 2, "SL", "SSL" and "SSSSL" all give the windows of "SSSL".

A repair (context.repair_attempt > 0) halves DEVICE_BATCH_SIZE after an out-of-memory crash;
otherwise it moves the crashed knob the other way from the best value, or goes back to the best
train.py and tries a different change.

What this does not do: understand the model. It explores the neighbourhood of the best settings;
it will not find architectural ideas, and its value grids are guesses sized for the reference
train.py.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass

from autoresearch import knobs
from autoresearch.agent.base import HistoryRow, Proposal, ProposalContext, Usage
from autoresearch.agent.editor import TrainPyEditor
from autoresearch.errors import UserError

DESCRIPTION = re.compile(r"^([A-Z][A-Z0-9_]*) (\S+) -> (\S+)")
# Each knob has two rings of values: the near one is tried first, the far one once every knob's
# near ring has been tried (from the current best: a kept trial opens fresh neighbourhoods).
LR_MULTIPLIERS = ((0.5, 0.7, 0.8, 1.25, 1.4, 2.0), (0.25, 0.35, 0.6, 0.9, 1.1, 1.6, 2.8, 4.0))
VALUE_GRIDS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "WEIGHT_DECAY": ((0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4), (0.025, 0.075, 0.25, 0.5, 0.6)),
    "WARMDOWN_RATIO": ((0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                       (0.1, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.9, 1.0)),
    "WARMUP_RATIO": ((0.0, 0.01, 0.02, 0.05), (0.03, 0.1, 0.15)),
    "FINAL_LR_FRAC": ((0.0, 0.01, 0.05, 0.1), (0.02, 0.03, 0.2)),
}
DEPTH_STEPS = ((-1, 1), (-2, 2, -3, 3))
ASPECT_SCALES = ((0.75, 1.25), (0.5, 1.5, 2.0))
WINDOW_PATTERNS = (("L", "SL", "SSL", "SSSL", "SSSSL"), ("SSSSSL", "SSLL", "SSSSSSSL"))
LR_WEIGHT = 3.0  # per *_LR knob: the most sensitive knobs are drawn more often
DEVICE_BATCH_WEIGHT = 0.5  # same gradient, only throughput changes
BATCH_FACTORS = (2, 4)  # halve/double, then quarter/quadruple
RINGS = (0, 1)
SEQUENCE_LENGTH_NAMES = ("MAX_SEQ_LEN", "SEQUENCE_LEN", "SEQ_LEN", "BLOCK_SIZE")
OOM_MARKERS = ("out of memory", "outofmemoryerror", "cuda oom", "oom")


@dataclass(frozen=True)
class Mutation:
    knob: str
    old_text: str
    new_value: object
    new_text: str

    def describe(self, note: str = "") -> str:
        return f"{self.knob} {self.old_text} -> {self.new_text}" + (f" ({note})" if note else "")


def _normalized(value_text: str) -> str:
    """A canonical form of a value as written, so `2**20` and `1048576` count as the same."""
    try:
        value = knobs.read_knobs(f"X = {value_text}\n")["X"].value
    except (UserError, KeyError):
        return value_text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return repr(value)


def tried_values(history: list[HistoryRow]) -> set[tuple[str, str]]:
    """(knob, normalized new value) for every history description of the form `KNOB old -> new`."""
    tried = set()
    for row in history:
        match = DESCRIPTION.match(row.description.strip())
        if match:
            tried.add((match.group(1), _normalized(match.group(3))))
    return tried


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def _format(value: object, old_source: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and "**" in old_source and value > 0 \
            and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return knobs.format_value(value)


def _sequence_length(prepare_py: str) -> int | None:
    """prepare.py's context length: a constant, or the default in `int(os.environ.get(...) or 2048)`."""
    try:
        tree = ast.parse(prepare_py)
    except SyntaxError:
        return None
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if not (isinstance(target, ast.Name) and target.id in SEQUENCE_LENGTH_NAMES):
            continue
        for part in ast.walk(node.value):
            if isinstance(part, ast.BoolOp) and isinstance(part.op, ast.Or):
                part = part.values[-1]
            if isinstance(part, ast.Constant) and isinstance(part.value, int) and part.value > 0:
                return part.value
    return None


def _batch_ok(total: object, device: object, sequence_length: int) -> bool:
    return isinstance(total, int) and isinstance(device, int) and device >= 1 and \
        total >= device * sequence_length and total % (device * sequence_length) == 0


def candidates(found: dict[str, knobs.Knob], prepare_py: str, ring: int = 0) -> dict[str, list[object]]:
    """Values worth trying for each knob train.py has, in a fixed order (ring 0 near, 1 farther)."""
    options: dict[str, list[object]] = {}
    for name, knob in found.items():
        value = knob.value
        if isinstance(value, bool):
            continue
        if name.endswith("_LR") and isinstance(value, (int, float)) and value > 0:
            options[name] = [_round(value * m) for m in LR_MULTIPLIERS[ring]]
        elif name in VALUE_GRIDS and isinstance(value, (int, float)):
            options[name] = list(VALUE_GRIDS[name][ring])
            if name == "WEIGHT_DECAY" and value > 0 and ring == 0:
                options[name] += [_round(value * 0.5), _round(value * 2.0)]
        elif name == "DEPTH" and isinstance(value, int):
            options[name] = [value + step for step in DEPTH_STEPS[ring] if value + step >= 1]
        elif name == "ASPECT_RATIO" and isinstance(value, int):
            scaled = (round(value * scale / 8) * 8 for scale in ASPECT_SCALES[ring])
            options[name] = [v for v in scaled if v >= 8]
        elif name == "WINDOW_PATTERN" and isinstance(value, str) and value and set(value.upper()) <= {"S", "L"}:
            depth = _depth(found)
            current = layer_windows(value, depth)
            distinct: dict[tuple[str, ...] | str, str] = {}
            for pattern in WINDOW_PATTERNS[ring]:  # one pattern per distinct set of windows, none a no-op
                distinct.setdefault(layer_windows(pattern, depth), pattern)
            options[name] = [pattern for windows, pattern in distinct.items() if windows != current]
    if "DEVICE_BATCH_SIZE" in found or "TOTAL_BATCH_SIZE" in found:
        options.update(_batch_candidates(found, prepare_py, BATCH_FACTORS[ring]))
    for name in options:
        current = found[name].value
        values = options[name]
        options[name] = [v for i, v in enumerate(values) if v != current and v not in values[:i]]
    return {name: values for name, values in options.items() if values}


def _depth(found: dict[str, knobs.Knob]) -> int | None:
    depth = found["DEPTH"].value if "DEPTH" in found else None
    return depth if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 1 else None


def layer_windows(pattern: str, depth: int | None) -> tuple[str, ...] | str:
    """The per-layer windows ("S"/"L") a WINDOW_PATTERN gives at `depth`, as train.py computes them:
    the pattern repeated over the layers, the last layer always "L". Without a depth, the pattern."""
    pattern = pattern.upper()
    if depth is None or not pattern:
        return pattern
    letters = [pattern[i % len(pattern)] for i in range(depth)]
    letters[-1] = "L"
    return tuple(letters)


def knob_weight(name: str) -> float:
    """How often a knob is drawn, relative to the others (see the module docstring)."""
    if name.endswith("_LR"):
        return LR_WEIGHT
    if name == "DEVICE_BATCH_SIZE":
        return DEVICE_BATCH_WEIGHT
    return 1.0


def _batch_candidates(found: dict[str, knobs.Knob], prepare_py: str, factor: int) -> dict[str, list[object]]:
    device = found["DEVICE_BATCH_SIZE"].value if "DEVICE_BATCH_SIZE" in found else None
    total = found["TOTAL_BATCH_SIZE"].value if "TOTAL_BATCH_SIZE" in found else None
    sequence_length = _sequence_length(prepare_py) or 1
    # Keep the gradient-accumulation arithmetic whole only if it is whole now.
    constrained = _batch_ok(total, device, sequence_length)
    options: dict[str, list[object]] = {}
    if isinstance(device, int) and not isinstance(device, bool):
        values = [v for v in (device // factor, device * factor) if v >= 1 and v != device]
        options["DEVICE_BATCH_SIZE"] = [v for v in values
                                        if not constrained or _batch_ok(total, v, sequence_length)]
    if isinstance(total, int) and not isinstance(total, bool):
        values = [v for v in (total // factor, total * factor) if v >= 1]
        options["TOTAL_BATCH_SIZE"] = [v for v in values
                                       if not constrained or _batch_ok(v, device, sequence_length)]
    return options


class OfflineProposer:
    """Mutates one hyperparameter per trial, deterministically from the seed and the history."""

    name = "offline"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def propose(self, context: ProposalContext) -> Proposal:
        editor = TrainPyEditor(context.worktree, context.trial_dir)
        source = editor.train_py.read_text(encoding="utf-8")
        rng = random.Random(f"offline:{self.seed}:{context.trial_number}:{context.repair_attempt}:"
                            f"{len(context.history)}")
        tried = tried_values(context.history)
        note = ""
        mutation = None
        if context.repair_attempt > 0:
            mutation, note = self._repair(source, context, tried)
            if mutation is None and source != context.best_train_py:
                # Start again from the best train.py and try something else entirely.
                # The crashed values count as tried.
                tried |= {(name, _normalized(k.value_source)) for name, k in _safe_knobs(source).items()}
                editor.execute({"command": "create", "path": "train.py", "file_text": context.best_train_py})
                source = context.best_train_py
        if mutation is None:
            mutation = self._choose(source, context.prepare_py, tried, rng)
            note = note or ("repair: a different change" if context.repair_attempt > 0 else "")
        result = self._apply(editor, source, mutation)
        description = mutation.describe(note)
        transcript = [{"role": "harness", "proposer": self.name, "seed": self.seed,
                       "description": description, "knob": mutation.knob, "old": mutation.old_text,
                       "new": mutation.new_text,
                       "repair_attempt": context.repair_attempt, "tool_result": result}]
        return Proposal(description=description, usage=Usage(), transcript=transcript)

    # --- choosing -----------------------------------------------------------------------------

    def _choose(self, source: str, prepare_py: str, tried: set[tuple[str, str]],
                rng: random.Random) -> Mutation:
        found = knobs.read_knobs(source)
        untried: dict[str, list[object]] = {}
        for ring in RINGS:
            for name, values in sorted(candidates(found, prepare_py, ring).items()):
                if not _editable_line(source, found[name]):
                    continue
                fresh = [v for v in values if (name, _normalized(knobs.format_value(v))) not in tried]
                if name == "WINDOW_PATTERN":  # a pattern with the windows of a tried one is tried too
                    depth = _depth(found)
                    seen = {layer_windows(value, depth) for value in _tried_strings(tried, name)}
                    fresh = [v for v in fresh if layer_windows(str(v), depth) not in seen]
                if fresh:
                    untried[name] = fresh
            if untried:
                break
        if not untried:
            raise UserError("the offline proposer has nothing left to try in train.py: none of the knobs "
                            "it mutates (learning rates, WEIGHT_DECAY, WARMDOWN_RATIO, DEPTH, ASPECT_RATIO, "
                            "batch sizes, WINDOW_PATTERN) is present with an untried value; "
                            "use --agent claude")
        names = sorted(untried)
        name = rng.choices(names, weights=[knob_weight(n) for n in names])[0]
        value = rng.choice(untried[name])
        knob = found[name]
        return Mutation(name, knob.value_source, value, _format(value, knob.value_source))

    def _repair(self, source: str, context: ProposalContext,
                tried: set[tuple[str, str]]) -> tuple[Mutation | None, str]:
        found = _safe_knobs(source)
        tail = (context.last_crash_tail or "").lower()
        device = found.get("DEVICE_BATCH_SIZE")
        if any(marker in tail for marker in OOM_MARKERS) and device is not None \
                and isinstance(device.value, int) and device.value > 1 and _editable_line(source, device):
            halved = device.value // 2
            return Mutation(device.name, device.value_source, halved, _format(halved, device.value_source)), \
                "repair: out of memory"
        try:
            best = knobs.read_knobs(context.best_train_py)
        except UserError:
            return None, ""
        changed = [name for name, knob in found.items() if name in best and knob.value != best[name].value]
        if len(changed) != 1:
            return None, ""
        name = changed[0]
        crashed, before = found[name].value, best[name].value
        mirrored = _mirror(before, crashed)
        if mirrored is None or (name, _normalized(knobs.format_value(mirrored))) in tried \
                or not _editable_line(source, found[name]):
            return None, ""
        source_text = found[name].value_source
        mutation = Mutation(name, source_text, mirrored, _format(mirrored, source_text))
        return mutation, "repair: the other direction"

    # --- editing ------------------------------------------------------------------------------

    @staticmethod
    def _apply(editor: TrainPyEditor, source: str, mutation: Mutation) -> str:
        knob = knobs.read_knobs(source)[mutation.knob]
        anchor = _unique_anchor(source, knob)
        if anchor is None:  # _choose and _repair only pick editable knobs; a bug if this happens
            raise RuntimeError(f"offline proposer: the {knob.name} line is not uniquely editable")
        prefix, line = anchor
        name_part, equals, value_part = line.partition("=")
        new_line = name_part + equals + value_part.replace(knob.value_source, mutation.new_text, 1)
        result = editor.execute({"command": "str_replace", "path": "train.py", "old_str": prefix + line,
                                 "new_str": prefix + new_line})
        if result.is_error:
            raise RuntimeError(f"offline proposer's edit did not apply: {result.content}")
        return result.content


def _tried_strings(tried: set[tuple[str, str]], knob: str) -> list[str]:
    """The tried string values of `knob` (normalized values are reprs)."""
    found = []
    for name, normalized in tried:
        if name != knob:
            continue
        try:
            value = ast.literal_eval(normalized)
        except (ValueError, SyntaxError):
            value = normalized
        if isinstance(value, str):
            found.append(value)
    return found


def _safe_knobs(source: str) -> dict[str, knobs.Knob]:
    try:
        return knobs.read_knobs(source)
    except UserError:  # a crashed train.py may not even parse
        return {}


def _unique_anchor(source: str, knob: knobs.Knob) -> tuple[str, str] | None:
    """(prefix, line) such that prefix + line occurs once in the file: the knob's line, or with the
    newline before it when the bare line also occurs inside another (`DEPTH = 8` in `MAX_DEPTH = 8`)."""
    if "\n" in knob.value_source:
        return None
    line = source.splitlines()[knob.line - 1]
    if knob.value_source not in line.partition("=")[2]:
        return None
    for prefix in ("", "\n"):
        if (knob.line > 1 or not prefix) and source.count(prefix + line) == 1:
            return prefix, line
    return None


def _editable_line(source: str, knob: knobs.Knob) -> bool:
    return _unique_anchor(source, knob) is not None


def _mirror(before: object, crashed: object) -> object | None:
    """The value as far from `before` as `crashed` was, in the other direction (None if senseless)."""
    if isinstance(before, bool) or isinstance(crashed, bool):
        return None
    if isinstance(before, int) and isinstance(crashed, int):
        if before > 0 and crashed > 0 and before & (before - 1) == 0 and crashed & (crashed - 1) == 0:
            value = before * before // crashed  # powers of two (batch sizes) scale, not step
        else:
            value = before - (crashed - before)
        return value if value >= 1 and value != before else None
    if isinstance(before, (int, float)) and isinstance(crashed, (int, float)) and before > 0 and crashed > 0:
        return _round(before * before / crashed)
    return None
