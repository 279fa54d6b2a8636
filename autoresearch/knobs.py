"""Reading and rewriting the hyperparameter block of `train.py`: its top-level `NAME = value` knobs.

A knob is a module-level assignment to an UPPER_CASE name whose value is a constant expression:
numbers, strings, booleans, tuples of those, and arithmetic on them (`2**19`, `0.04 * 2`).
`set_knobs` rewrites just the value's source text and leaves every comment and line in place, so
a rewritten `train.py` diffs as one line per knob. The offline proposer, the tests and the demo
(which shrinks the model for a CPU) all change `train.py` this way.

It does not understand knobs computed from other names (`MODEL_DIM = DEPTH * 64` is skipped).
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

from autoresearch.errors import UserError

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}


@dataclass(frozen=True)
class Knob:
    name: str
    value: object
    line: int  # 1-based line of the assignment
    value_source: str  # the value as written


def _constant(node: ast.AST) -> object:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _constant(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_constant(node.left), _constant(node.right))
    if isinstance(node, ast.Tuple):
        return tuple(_constant(element) for element in node.elts)
    raise ValueError("not a constant expression")


def _knob_nodes(source: str) -> list[tuple[ast.Assign, str, object]]:
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise UserError(f"train.py does not parse: {error.msg} (line {error.lineno})") from error
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    found.append((node, name, _constant(node.value)))
                except (ValueError, ZeroDivisionError, OverflowError):
                    continue
    return found


def read_knobs(source: str) -> dict[str, Knob]:
    """The knobs of a train.py source, by name (the last assignment wins, as in Python)."""
    knobs = {}
    for node, name, value in _knob_nodes(source):
        knobs[name] = Knob(name, value, node.lineno, ast.get_source_segment(source, node.value) or repr(value))
    return knobs


def format_value(value: object) -> str:
    if isinstance(value, float):
        return repr(float(f"{value:.6g}"))
    return repr(value)


def set_knobs(source: str, values: dict[str, object]) -> str:
    """Return `source` with each named knob's value replaced; unknown names are a UserError."""
    nodes = {name: node for node, name, _ in _knob_nodes(source)}
    unknown = sorted(set(values) - set(nodes))
    if unknown:
        raise UserError(f"train.py has no knob named {', '.join(unknown)}")
    lines = source.splitlines(keepends=True)
    # Replace from the bottom up so earlier offsets stay valid.
    for name in sorted(values, key=lambda n: (nodes[n].value.lineno, nodes[n].value.col_offset), reverse=True):
        value_node = nodes[name].value
        if value_node.lineno != value_node.end_lineno:
            raise UserError(f"knob {name} spans several lines; edit it by hand")
        row = value_node.lineno - 1
        line = lines[row]
        # col offsets are in UTF-8 bytes
        encoded = line.encode("utf-8")
        new = encoded[: value_node.col_offset] + format_value(values[name]).encode() + encoded[value_node.end_col_offset :]
        lines[row] = new.decode("utf-8")
    return "".join(lines)
