"""What a trial's processes may touch, enforced by the kernel: Landlock on Linux, the audit hook elsewhere.

Two steps, kept apart. `training_policy` and `evaluator_policy` are pure: from a trial's settings
(its worktree, trial directory, dataset, compile cache) and the paths of the running Python they
compute a `Policy`: the paths a process may read (and execute), the paths it may write, the device
files it may use, whether it may open network connections. The harness computes the policy and
hands it to the child in $AUTORESEARCH_SANDBOX (JSON); the child applies it with
`apply_from_environment` — the launcher (launch.py) before train.py runs, the evaluator
(scoring.py) right after it has read the rows it scores and before it imports train.py.

Applying is one-way and inherited: Landlock (kernel >= 5.13; ABI 4 adds TCP rules, ABI 6 scoping)
restricts the process and every process it starts, through any route to a file — a child shell,
a C extension, ctypes, a symbolic or hard link, /proc/<pid>/root — and cannot be lifted. Training
may read: the worktree, the Python installation (prefixes, site-packages, every sys.path entry,
the autoresearch package), the train split, tokenizer, token-bytes and manifest files of the
dataset, system libraries and configuration (/usr, /lib*, /bin, /sbin, /etc, /opt), /proc and /sys;
it may write its own trial directory, a private temporary directory ($TMPDIR) and the run's
compile cache; device files: the null/zero/random nodes, /dev/shm and the NVIDIA nodes. It may
not read val, holdout, the evaluator's row cache, other trials' directories or weights, the
user's checkout or the rest of `~`. With ABI >= 4 it may not bind or connect TCP sockets; with
ABI >= 6 it may not signal processes outside its sandbox (the harness, the supervisor) or reach
abstract UNIX sockets. The evaluator gets the same, except that once its rows are in memory it
reads no token file of any split (only the tokenizer, manifest and token-bytes files, which
build_model needs), reads the one weights file it scores, and writes only its scratch directory
and the compile cache.
A candidate readable path that is the parent of something forbidden (a sys.path entry that is the
project checkout or `~`) is dropped, so that the Python paths cannot reopen what the rest denies;
a package imported from such an entry (autoresearch from a checkout on $PYTHONPATH that is also
the project) is then not importable by the trial, which fails at once with ModuleNotFoundError
(an installed or editable package is found through its own directory and is not affected).

Why direct system calls (ctypes) rather than the `landlock` package: that package (1.0.0.dev5, a
development release) covers filesystem rules only — no TCP rules (ABI 4) and no signal or socket
scoping (ABI 6) — and it decides the handled rights itself; the three system calls and their
structures are short, stable kernel ABI (include/uapi/linux/landlock.h), so calling them directly
costs less than depending on a pre-release for part of the job.

Where Landlock is missing (macOS, kernels before 5.13, a seccomp profile that blocks the calls, or
$AUTORESEARCH_ISOLATION=audit-hook), the mode is `audit-hook`: only launch.py's and scoring.py's
audit hooks stand (they see Python-level opens and command lines, not what child processes, C
code or ctypes do). Every trial record and the report say which mode was in effect.

What this does not protect against: what the allowed paths themselves allow — the compile cache
is shared by the run's trials (a trial can leave data there for a later one), /proc and /sys are
readable (so is /etc), and a trial still sees the names and sizes of files it cannot open (stat
is not restricted). Through /proc it can read the harness's *initial* environment and memory map
(/proc/<pid>/environ, maps: Landlock here stops ptrace attach, /proc/<pid>/mem, fd and cwd, but
not these reads), so an API key exported in the shell that started `autoresearch` is visible to
a trial; childenv.py keeps it out of every child's own environment, not out of the harness's. UNIX sockets with a path and UDP are not restricted (Landlock has no rules for
them yet). Denials are silent for the kernel: `denial_in_line` finds them only where the denied
process printed "Permission denied" with the path (a shell or Python does; `2>/dev/null` hides it),
so a denied attempt is always harmless but not always reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import site
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from autoresearch.contract import SPLITS

ENV_POLICY = "AUTORESEARCH_SANDBOX"  # the policy (JSON) a child applies to itself
ENV_ISOLATION = "AUTORESEARCH_ISOLATION"  # "audit-hook" (or "off") forces the fallback
AUDIT_HOOK = "audit-hook"
LANDLOCK = "landlock-v"  # followed by the ABI version in effect: "landlock-v7"
ISOLATION_ERROR_EXIT = 2

# The dataset files training may read; everything else in the dataset directory stays closed.
TRAINING_DATASET_FILES = ("manifest.json", "tokenizer.json", "token_bytes.npy", "train.bin", "train.docs.npy")
EVALUATOR_DATASET_FILES = ("manifest.json", "tokenizer.json", "token_bytes.npy")  # after its rows are loaded
EVAL_CACHE_PREFIX = "eval-rows-"
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys")
SYSTEM_WRITE = ("/dev/shm",)
SYSTEM_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEVICE_PREFIXES = ("nvidia",)  # /dev/nvidia0, /dev/nvidiactl, /dev/nvidia-uvm, ... (and /dev/nvidia-caps/*)


class SandboxError(Exception):
    """Landlock could not be applied as the policy asks."""


@dataclass(frozen=True)
class Policy:
    """What one process (and its children) may touch; `mode` says how it is enforced."""

    mode: str  # "landlock-v<abi>" or "audit-hook"
    abi: int  # the Landlock ABI version used (0: none)
    read: tuple[str, ...] = ()  # directories and files: read and execute
    write: tuple[str, ...] = ()  # directories and files: read, write, create, delete
    devices: tuple[str, ...] = ()  # device files: read, write, ioctl
    tmp_dir: str | None = None  # private temporary directory, created before the restriction ($TMPDIR)
    no_network: bool = True  # no TCP bind or connect (ABI >= 4)
    watched: tuple[str, ...] = ()  # names whose denial in a log is an integrity violation
    dropped: tuple[str, ...] = field(default=(), compare=False)  # readable candidates left out (parents of denied paths)

    @property
    def landlock(self) -> bool:
        return self.mode.startswith(LANDLOCK)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data = json.loads(text)
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


# --- The pure rules -----------------------------------------------------------------------------


def mode_for(abi: int) -> str:
    return f"{LANDLOCK}{abi}" if abi > 0 else AUDIT_HOOK


def _absolute(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _without_parents_of(candidates: Iterable[str], forbidden: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split `candidates` into those that contain no forbidden path and those that do (dropped).

    Both sides are compared as written and with symbolic links resolved: Landlock grants the
    directory a path leads to, so `/home/u` must be dropped when val.bin is under its target too.
    """
    bad_paths = {form for path in forbidden for form in (path, os.path.realpath(path))}
    kept, dropped = [], []
    for candidate in dict.fromkeys(_absolute(path) for path in candidates if path):
        forms = (candidate, os.path.realpath(candidate))
        contains = any(_is_within(bad, form) for bad in bad_paths for form in forms)
        (dropped if contains else kept).append(candidate)
    return kept, dropped


def forbidden_data(data_dir: str | os.PathLike) -> list[str]:
    """The dataset paths no trial process may read: every split but train, and the row cache's prefix."""
    root = _absolute(data_dir)
    names = [f"{split}{suffix}" for split in SPLITS if split != "train" for suffix in (".bin", ".docs.npy")]
    return [os.path.join(root, name) for name in names] + [os.path.join(root, EVAL_CACHE_PREFIX)]


def _watched(data_dir: str, extra: Iterable[str]) -> tuple[str, ...]:
    names = [os.path.basename(path) for path in forbidden_data(data_dir)]
    return tuple(dict.fromkeys([*names, *extra]))


def training_policy(*, abi: int, worktree: str | os.PathLike, trial_dir: str | os.PathLike,
                    data_dir: str | os.PathLike, compile_cache: str | os.PathLike,
                    python_paths: Sequence[str], private_roots: Sequence[str | os.PathLike],
                    devices: Sequence[str] = (), system_read: Sequence[str] = SYSTEM_READ) -> Policy:
    """The rules for a training process (and its children).

    `private_roots` are the directories nothing may be read from except what is named here: the
    run directory (other trials' weights), the user's checkout, the dataset directory. A Python
    path that contains one of them (the checkout on sys.path, `~`) is dropped.
    """
    trial = _absolute(trial_dir)
    data = _absolute(data_dir)
    forbidden = [*(_absolute(root) for root in private_roots), *forbidden_data(data)]
    python, dropped = _without_parents_of([*python_paths, *system_read], forbidden)
    read = [*python, _absolute(worktree), *(os.path.join(data, name) for name in TRAINING_DATASET_FILES)]
    write = [trial, _absolute(compile_cache), *SYSTEM_WRITE]
    guarded = ("model.pt", "prepare.py", "program.md", "train.py", "train.bin", "train.docs.npy")
    return Policy(mode=mode_for(abi), abi=abi, read=tuple(dict.fromkeys(read)), write=tuple(dict.fromkeys(write)),
                  devices=tuple(devices), tmp_dir=os.path.join(trial, ".tmp"), no_network=True,
                  watched=_watched(data, guarded), dropped=tuple(dropped))


def evaluator_policy(*, abi: int, worktree: str | os.PathLike, weights: str | os.PathLike,
                     scratch: str | os.PathLike, data_dir: str | os.PathLike, compile_cache: str | os.PathLike | None,
                     python_paths: Sequence[str], private_roots: Sequence[str | os.PathLike],
                     devices: Sequence[str] = (), system_read: Sequence[str] = SYSTEM_READ) -> Policy:
    """The rules for the evaluator once its rows are in memory: no split at all, one weights file.

    It reads the tokenizer files (build_model sizes the model from them), none of the token files.
    """
    data = _absolute(data_dir)
    forbidden = [*(_absolute(root) for root in private_roots), data, *forbidden_data(data)]
    python, dropped = _without_parents_of([*python_paths, *system_read], forbidden)
    read = [*python, _absolute(worktree), _absolute(weights), *(os.path.join(data, name) for name in EVALUATOR_DATASET_FILES)]
    write = [_absolute(scratch), *SYSTEM_WRITE] + ([_absolute(compile_cache)] if compile_cache else [])
    return Policy(mode=mode_for(abi), abi=abi, read=tuple(dict.fromkeys(read)), write=tuple(dict.fromkeys(write)),
                  devices=tuple(devices), tmp_dir=os.path.join(_absolute(scratch), "tmp"), no_network=True,
                  watched=_watched(data, ("model.pt", "train.bin", "train.docs.npy")),
                  dropped=tuple(dropped))


def denial_in_line(line: str, policy: Policy) -> str | None:
    """The watched name a log line reports as denied ("Permission denied" naming it), or None."""
    if "Permission denied" not in line or not policy.landlock:
        return None
    return next((name for name in policy.watched if name in line), None)


# --- What the running machine offers -------------------------------------------------------------


def python_paths() -> list[str]:
    """Where this interpreter and its packages live: what a child of it must be able to read."""
    import autoresearch

    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(sys.executable)),
             os.path.dirname(os.path.abspath(autoresearch.__file__))]
    with contextlib.suppress(Exception):
        paths += site.getsitepackages()
    with contextlib.suppress(Exception):
        paths.append(site.getusersitepackages())
    paths += [entry for entry in sys.path if entry]
    paths += [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    found = []
    for path in paths:
        absolute = _absolute(path)
        if os.path.exists(absolute):
            found.append(absolute)
            real = os.path.realpath(absolute)
            if real != absolute:
                found.append(real)
    return list(dict.fromkeys(found))


def device_files(root: str = "/dev") -> list[str]:
    """The device nodes a trial may use that exist here (GPU nodes included)."""
    found = [path for path in SYSTEM_DEVICES if os.path.exists(path)]
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(DEVICE_PREFIXES):
            found.append(entry.path)
    return found


# --- Landlock through its three system calls -------------------------------------------------------

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446), "arm64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# LANDLOCK_ACCESS_FS_* (include/uapi/linux/landlock.h)
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR, _MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
_MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_FILE_RIGHTS_V1 = _EXECUTE | _WRITE_FILE | _READ_FILE


def handled_fs(abi: int) -> int:
    """Every filesystem right the ABI knows: what is not granted by a rule is denied."""
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _file_rights(abi: int) -> int:
    rights = _FILE_RIGHTS_V1
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall_numbers() -> tuple[int, int, int] | None:
    return _SYSCALLS.get(os.uname().machine) if hasattr(os, "uname") else None


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers (0: none, or forced off by $AUTORESEARCH_ISOLATION)."""
    if os.environ.get(ENV_ISOLATION, "").strip().lower() in ("audit-hook", "off", "none"):
        return 0
    numbers = _syscall_numbers()
    if not sys.platform.startswith("linux") or numbers is None:
        return 0
    try:
        version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def isolation_mode() -> str:
    """The isolation this machine gives trials now: `landlock-v<abi>` or `audit-hook`."""
    return mode_for(landlock_abi())


def isolation_refusal() -> str | None:
    """Why `--require-isolation` must refuse to start here, or None when Landlock is available."""
    if landlock_abi() > 0:
        return None
    if os.environ.get(ENV_ISOLATION, "").strip().lower() in ("audit-hook", "off", "none"):
        return f"${ENV_ISOLATION} turns the kernel sandbox off; unset it"
    if not sys.platform.startswith("linux"):
        return f"the kernel sandbox needs Linux with Landlock; this is {sys.platform} (only the audit hook)"
    return (f"this kernel ({os.uname().release}) offers no Landlock (it needs 5.13 or later with Landlock "
            "enabled: lsm=landlock); only the audit hook would guard the trials")


def _fail(what: str) -> SandboxError:
    errno = ctypes.get_errno()
    return SandboxError(f"{what}: {os.strerror(errno)} (errno {errno})")


def apply(policy: Policy) -> str:
    """Restrict this process (and every process it starts) to `policy`; returns the mode in effect.

    An `audit-hook` policy changes nothing here (the callers install the hook). Paths that do not
    exist are skipped. Raises SandboxError when a Landlock policy cannot be applied.
    """
    if policy.tmp_dir:
        os.makedirs(policy.tmp_dir, exist_ok=True)
        for name in ("TMPDIR", "TMP", "TEMP"):
            os.environ[name] = policy.tmp_dir
        tempfile.tempdir = None  # forget a /tmp chosen earlier in this process: it may not be writable now
    if not policy.landlock:
        return AUDIT_HOOK
    for path in policy.write:
        if not os.path.exists(path):
            os.makedirs(path, exist_ok=True)  # a rule needs the directory to exist (the run's compile cache)
    numbers = _syscall_numbers()
    if numbers is None:
        raise SandboxError(f"Landlock system calls are not known on {os.uname().machine}")
    create_ruleset, add_rule, restrict_self = numbers
    libc = _libc()
    abi = policy.abi
    attr = _RulesetAttr(handled_fs(abi), 0, 0)
    size = 8
    if abi >= 4 and policy.no_network:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = libc.syscall(create_ruleset, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise _fail("landlock_create_ruleset")
    try:
        read_dir = _EXECUTE | _READ_FILE | _READ_DIR
        grants = [(path, read_dir) for path in policy.read]
        grants += [(path, handled_fs(abi)) for path in policy.write]
        grants += [(path, _READ_FILE | _WRITE_FILE | (_IOCTL_DEV if abi >= 5 else 0)) for path in policy.devices]
        for path, rights in grants:
            _add_path_rule(libc, add_rule, ruleset, path, rights, abi)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return policy.mode


def _add_path_rule(libc: ctypes.CDLL, add_rule: int, ruleset: int, path: str, rights: int, abi: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _file_rights(abi)  # a file takes only file rights
        rule = _PathBeneathAttr(rights, fd)
        if libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                        ctypes.c_uint32(0)) != 0:
            raise _fail(f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def policy_from_env(env: dict[str, str] | None = None) -> Policy | None:
    """The policy a harness put in a child's environment, or None."""
    text = (os.environ if env is None else env).get(ENV_POLICY)
    return Policy.from_json(text) if text else None


def apply_from_environment() -> str | None:
    """Apply the policy in $AUTORESEARCH_SANDBOX to this process; the mode in effect, or None without one.

    A policy that cannot be applied ends the process: one `error: isolation: ...` line on stderr
    and exit code 2, so that nothing runs with less isolation than the harness recorded.
    """
    try:
        policy = policy_from_env()
        return apply(policy) if policy is not None else None
    except (SandboxError, ValueError, TypeError, OSError) as error:
        sys.stderr.write(f"error: isolation: could not apply the sandbox: {error}\n")
        sys.stderr.flush()
        os._exit(ISOLATION_ERROR_EXIT)
