"""The text editor tool the proposers edit `train.py` through: the only write path into a trial.

`TrainPyEditor` executes Anthropic's client-side text editor tool (`text_editor_20250728`,
named `str_replace_based_edit_tool`) against one worktree: `view`, `str_replace`, `create` and
`insert`. Writes go to `train.py` and nowhere else, atomically and keeping the file's mode
(`autoresearch.atomic`: a temp file beside it, then `os.replace`). `view` also reads `prepare.py`,
`program.md` and `README.md` in the worktree and the current trial's records (`train.log`,
`eval.json`, ...) when a trial directory is given. `view program.md` shows the text the harness
read from the user's checkout for this trial when one is given (`program_md=`), not the
worktree's committed copy, which goes stale as soon as the human edits the real one.

Every mistake the model can make (a path outside that set, `..`, a symlink that leads out, a
directory, an `old_str` that matches zero or several times, a missing parameter, an unknown
command) comes back as a `ToolResult(is_error=True)` whose text says what went wrong, so the
conversation can continue; `execute` never raises for them.

What this does not protect against: code that `train.py` itself runs later (it can read and write
anything the training process can: the runner's sandboxing and the integrity checks cover that),
and a process that swaps a path for a symlink between our check and our write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from autoresearch.atomic import write_text_atomic

TOOL_TYPE = "text_editor_20250728"
TOOL_NAME = "str_replace_based_edit_tool"
WRITABLE = "train.py"
PROGRAM_MD = "program.md"
READABLE_IN_WORKTREE = ("train.py", "prepare.py", PROGRAM_MD, "README.md")
TRIAL_ALIAS = "trial"  # "trial/train.log" names a file in the current trial's directory
SNIPPET_CONTEXT_LINES = 4


FUNCTION_DESCRIPTION = (
    "View and edit files. command='view' shows a file with line numbers (optional view_range [start, end], "
    "end -1 for the last line); 'str_replace' replaces old_str, which must match exactly once, with new_str; "
    "'create' rewrites the whole file with file_text; 'insert' inserts insert_text after line insert_line "
    "(0: at the top). Only train.py can be written; prepare.py, program.md, README.md and trial/<name> "
    "(the current trial's records) can be viewed.")
FUNCTION_PARAMETERS = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "enum": ["view", "str_replace", "create", "insert"]},
        "path": {"type": "string", "description": "e.g. train.py"},
        "old_str": {"type": "string"}, "new_str": {"type": "string"}, "file_text": {"type": "string"},
        "insert_line": {"type": "integer"}, "insert_text": {"type": "string"},
        "view_range": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["command", "path"],
}


@dataclass
class ToolResult:
    content: str
    is_error: bool = False


class EditorError(Exception):
    """A tool call that cannot be carried out; its message goes back to the model."""


@dataclass(frozen=True)
class _Target:
    path: Path
    label: str  # how we name the file back to the model
    in_trial_dir: bool


def _numbered(lines: list[str], first_line_number: int) -> str:
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(lines, start=first_line_number))


class TrainPyEditor:
    """Carries out text editor tool calls inside one worktree (and, read-only, one trial dir)."""

    def __init__(self, worktree: Path, trial_dir: Path | None = None, max_characters: int | None = None,
                 program_md: str | None = None):
        self.worktree = Path(worktree).absolute()
        self.program_md = program_md  # the harness's fresh read; None: the worktree's file
        self.trial_dir = Path(trial_dir).absolute() if trial_dir is not None else None
        self.max_characters = max_characters
        self.edits: list[str] = []  # one line per successful write, for the transcript

    @property
    def train_py(self) -> Path:
        return self.worktree / WRITABLE

    def function_definition(self) -> dict:
        """The same tool as a plain JSON-schema function, for APIs without Anthropic's built-in type."""
        return {"name": TOOL_NAME, "description": FUNCTION_DESCRIPTION, "parameters": FUNCTION_PARAMETERS}

    def tool_definition(self) -> dict:
        definition: dict = {"type": TOOL_TYPE, "name": TOOL_NAME}
        if self.max_characters is not None:
            definition["max_characters"] = self.max_characters
        return definition

    # --- dispatch -----------------------------------------------------------------------------

    def execute(self, tool_input: object) -> ToolResult:
        """Run one tool call; every failure becomes an is_error result, never an exception."""
        try:
            if not isinstance(tool_input, dict):
                raise EditorError("the tool input must be a JSON object with a 'command' field")
            command = tool_input.get("command")
            if command == "view":
                return ToolResult(self.view(_required_str(tool_input, "path"), tool_input.get("view_range")))
            if command == "str_replace":
                new_str = tool_input.get("new_str", "")
                if not isinstance(new_str, str):
                    raise EditorError("'new_str' must be a string")
                return ToolResult(self.str_replace(_required_str(tool_input, "path"),
                                                   _required_str(tool_input, "old_str"), new_str))
            if command == "create":
                return ToolResult(self.create(_required_str(tool_input, "path"),
                                              _required_str(tool_input, "file_text")))
            if command == "insert":
                text = tool_input.get("insert_text", tool_input.get("new_str"))
                if not isinstance(text, str):
                    raise EditorError("'insert' needs 'insert_text' (the text to insert)")
                return ToolResult(self.insert(_required_str(tool_input, "path"),
                                              tool_input.get("insert_line"), text))
            if command is None:
                raise EditorError("missing 'command'; use one of: view, str_replace, create, insert")
            raise EditorError(f"unknown command {command!r}; use one of: view, str_replace, create, insert")
        except EditorError as error:
            return ToolResult(f"Error: {error}", is_error=True)
        except OSError as error:  # e.g. a file vanished or the disk is full
            return ToolResult(f"Error: {error.strerror or error}", is_error=True)

    # --- commands -----------------------------------------------------------------------------

    def view(self, path: str, view_range: object = None) -> str:
        target = self._resolve(path, write=False, must_exist=not self._serves_program_md(path))
        if self.program_md is not None and target.label == PROGRAM_MD and not target.in_trial_dir:
            text = self.program_md
        else:
            text = target.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        first = 1
        if view_range is not None:
            first, last = self._check_range(view_range, len(lines))
            lines = lines[first - 1 : last]
        body = _numbered(lines, first)
        if self.max_characters is not None and len(body) > self.max_characters:
            hidden = len(body) - self.max_characters
            if target.in_trial_dir:  # a log: its end is what matters
                body = f"[... {hidden} characters omitted; use view_range for earlier lines]\n" + \
                       body[-self.max_characters :]
            else:
                body = body[: self.max_characters] + \
                       f"\n[... {hidden} characters omitted; use view_range to see the rest]"
        return f"Here's the content of {target.label} with line numbers:\n{body}"

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        target = self._resolve(path, write=True)
        if old_str == "":
            raise EditorError("'old_str' is empty; give the exact text to replace")
        text = target.path.read_text(encoding="utf-8")
        count = text.count(old_str)
        if count == 0:
            raise EditorError(f"No replacement was performed: old_str did not appear verbatim in "
                              f"{target.label}. View the file and copy the text exactly, "
                              "including whitespace.")
        if count > 1:
            starts, position = [], text.find(old_str)
            while position != -1:
                starts.append(text.count("\n", 0, position) + 1)
                position = text.find(old_str, position + 1)
            raise EditorError(f"No replacement was performed: old_str appears {count} times in "
                              f"{target.label} (lines {', '.join(map(str, starts))}). Include more "
                              "surrounding lines so it matches exactly once.")
        start_line = text.count("\n", 0, text.find(old_str)) + 1
        updated = text.replace(old_str, new_str, 1)
        write_text_atomic(target.path, updated)
        self.edits.append(f"str_replace at line {start_line}")
        snippet = self._snippet(updated, start_line, new_str.count("\n") + 1)
        return f"The file {target.label} has been edited. Here's a snippet of the result:\n{snippet}\n" \
               "Review the change and edit again if it is not what you intended."

    def create(self, path: str, file_text: str) -> str:
        target = self._resolve(path, write=True, must_exist=False)
        write_text_atomic(target.path, file_text)
        self.edits.append("create (whole file rewritten)")
        return f"File created successfully at: {target.label}"

    def insert(self, path: str, insert_line: object, insert_text: str) -> str:
        target = self._resolve(path, write=True)
        text = target.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        if isinstance(insert_line, bool) or not isinstance(insert_line, int):
            raise EditorError("'insert_line' must be an integer (0 inserts at the top of the file)")
        if not 0 <= insert_line <= len(lines):
            raise EditorError(f"'insert_line' {insert_line} is out of range: {target.label} has {len(lines)} "
                              f"lines, so use 0..{len(lines)}")
        new_lines = insert_text.split("\n")
        if insert_text.endswith("\n"):
            new_lines.pop()
        updated_lines = lines[:insert_line] + new_lines + lines[insert_line:]
        updated = "\n".join(updated_lines) + ("\n" if text.endswith("\n") or not text else "")
        write_text_atomic(target.path, updated)
        self.edits.append(f"insert after line {insert_line}")
        snippet = self._snippet(updated, insert_line + 1, len(new_lines))
        return f"The file {target.label} has been edited. Here's a snippet of the result:\n{snippet}"

    # --- paths --------------------------------------------------------------------------------

    def _serves_program_md(self, raw: str) -> bool:
        parts = tuple(part for part in PurePosixPath(raw.strip()).parts if part not in (".", "/"))
        return self.program_md is not None and parts == (PROGRAM_MD,)

    def _allowed_summary(self) -> str:
        readable = ", ".join(READABLE_IN_WORKTREE)
        trial = f"; the trial's records as {TRIAL_ALIAS}/<name> (e.g. {TRIAL_ALIAS}/train.log)" \
            if self.trial_dir is not None else ""
        return f"you may write only train.py; you may view {readable}{trial}"

    def _resolve(self, raw: str, write: bool, must_exist: bool = True) -> _Target:
        raw = raw.strip()
        if not raw:
            raise EditorError("'path' is empty")
        parts = PurePosixPath(raw).parts
        if ".." in parts:
            raise EditorError(f"path {raw!r} contains '..'; {self._allowed_summary()}")
        where, relative = self._locate(raw)
        if where == "trial":
            if write:
                raise EditorError(f"{raw!r} is a trial record and read-only; {self._allowed_summary()}")
            return self._trial_target(raw, relative)
        name = "/".join(relative)
        allowed = (WRITABLE,) if write else READABLE_IN_WORKTREE
        if name not in allowed:
            if (not write and self.trial_dir is not None and len(relative) == 1
                    and (self.trial_dir / relative[0]).is_file()):
                return self._trial_target(raw, relative)
            verb = "edit" if write else "view"
            if name in READABLE_IN_WORKTREE:
                raise EditorError(f"{name} is read-only: you cannot {verb} it; {self._allowed_summary()}")
            raise EditorError(f"cannot {verb} {raw!r}; {self._allowed_summary()}")
        path = self.worktree / name
        if path.is_symlink() or path.resolve() != self.worktree.resolve() / name:
            raise EditorError(f"{name} is a symlink; the editor does not follow links")
        if path.is_dir():
            raise EditorError(f"{name} is a directory; only files can be viewed")
        if must_exist and not path.exists():
            raise EditorError(f"{name} does not exist in the worktree")
        return _Target(path, name, in_trial_dir=False)

    def _locate(self, raw: str) -> tuple[str, tuple[str, ...]]:
        """Which root a path names ('worktree' or 'trial') and its parts relative to that root."""
        path = PurePosixPath(raw)
        if path.is_absolute():
            for root, where in ((self.worktree, "worktree"), (self.trial_dir, "trial")):
                if root is None:
                    continue
                for candidate_root in {root, root.resolve()}:
                    try:
                        return where, PurePosixPath(raw).relative_to(candidate_root.as_posix()).parts
                    except ValueError:
                        pass
            if len(path.parts) == 2:  # "/train.py": the model's habit of rooting paths
                return "worktree", path.parts[1:]
            raise EditorError(f"{raw!r} is outside the worktree; {self._allowed_summary()}")
        parts = tuple(part for part in path.parts if part != ".")
        if len(parts) >= 2 and parts[0] == TRIAL_ALIAS and self.trial_dir is not None:
            return "trial", parts[1:]
        return "worktree", parts

    def _trial_target(self, raw: str, relative: tuple[str, ...]) -> _Target:
        assert self.trial_dir is not None
        if not relative:
            raise EditorError(f"{raw!r} is the trial directory; view one of its files")
        path = self.trial_dir.joinpath(*relative)
        root = self.trial_dir.resolve()
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise EditorError(f"{raw!r} leads outside the trial directory; {self._allowed_summary()}")
        if path.is_dir():
            raise EditorError(f"{raw!r} is a directory; only files can be viewed")
        if not path.is_file():
            raise EditorError(f"{raw!r} does not exist in the trial directory")
        return _Target(path, f"{TRIAL_ALIAS}/{'/'.join(relative)}", in_trial_dir=True)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _check_range(view_range: object, n_lines: int) -> tuple[int, int]:
        if (not isinstance(view_range, (list, tuple)) or len(view_range) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in view_range)):
            raise EditorError("'view_range' must be two integers [start, end] (end -1 means the last line)")
        first, last = view_range
        if last == -1:
            last = n_lines
        if not 1 <= first <= max(n_lines, 1) or last < first or last > n_lines:
            raise EditorError(f"'view_range' {list(view_range)} is out of range: "
                              f"the file has {n_lines} lines")
        return first, last

    def _snippet(self, text: str, first_changed: int, n_changed: int) -> str:
        lines = text.split("\n")
        start = max(1, first_changed - SNIPPET_CONTEXT_LINES)
        end = min(len(lines), first_changed + n_changed - 1 + SNIPPET_CONTEXT_LINES)
        return _numbered(lines[start - 1 : end], start)


def _required_str(tool_input: dict, key: str) -> str:
    value = tool_input.get(key)
    if value is None:
        raise EditorError(f"missing required parameter {key!r} for command {tool_input.get('command')!r}")
    if not isinstance(value, str):
        raise EditorError(f"parameter {key!r} must be a string")
    return value
