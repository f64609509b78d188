"""Running a project's `command:` entry points as child processes (dispatcher tasks and `run build`).

A command line runs through the shell, as the published clients run it (`bash -c`, /bin/sh where there is no
bash), so `python train.py && python post.py`, pipes, redirections and `$VAR` work. The task's file paths
(IN OUT) are appended to the line, exactly where the published client appends them; a line that refers to
them itself as "$1" "$2" (or "$@") outside single quotes gets nothing appended, so a pipe can hand them to
any of its stages. The child runs in the project folder with our environment; `python` and `python3`, where
the shell looks them up, mean the interpreter that runs scaleout (a two-line shim folder first on PATH), so
the scripts see the packages the client sees (scaleoututil, numpy, ...) whatever `python` is otherwise first
on PATH; when that interpreter lives in a virtual environment, the child gets the environment "activated"
(its bin folder on PATH, VIRTUAL_ENV set). A line that activates another environment itself wins.

The child's stdout goes where ours goes; its stderr is copied to ours line by line and the last lines
are kept, because they are what a user needs to see when a command fails on a remote client. The shell and
everything it starts share one process group, killed as a whole when the task is stopped.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from scaleout.project.config import ProjectConfig, ProjectError
from scaleout.project.environment import in_virtualenv

STDERR_TAIL_LINES = 20
MAX_LINE_CHARS = 500  # a tail line longer than this is cut (progress bars write very long lines)
TERMINATE_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when a command is stopped
PYTHON_NAMES = ("python", "python3")
# "$1", "${2}", "$@", "$*" outside single quotes: the line places the task's file paths itself
_POSITIONAL = re.compile(r"(?<!\\)\$(?:\{\s*)?[1-9@*]")
_SINGLE_QUOTED = re.compile(r"'[^']*'")
SHELL_EXIT_HINTS = {126: " (the shell found the program but cannot execute it: check its permissions)",
                    127: " (the shell found no such program: check its name and PATH)"}


class CommandStopped(Exception):
    """The command was stopped (its whole process group killed) because `stop` was set."""


@dataclass
class CommandResult:
    """How a finished command ended: exit code, wall time and the last lines it wrote to stderr."""

    argv: list[str]
    returncode: int
    seconds: float
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def exit_text(self) -> str:
        """'exited with code 3' or 'was killed by signal SIGKILL'."""
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"was killed by signal {name}"
        hint = SHELL_EXIT_HINTS.get(self.returncode, "")
        return f"exited with code {self.returncode}{hint}"

    def tail_text(self) -> str:
        """The stderr tail as an indented block for error messages (says so when there was none)."""
        if not self.stderr_tail:
            return "It wrote nothing to stderr."
        lines = "\n".join(f"  {line}" for line in self.stderr_tail)
        return f"Last {len(self.stderr_tail)} line(s) of its stderr:\n{lines}"


def shell_argv(command: str, name: str = "command") -> list[str]:
    """The argv that runs a `command:` line through the shell; arguments appended to it reach the line as
    "$@" (appended to its end unless it uses positional parameters itself, see the module docstring).

    ValueError, with the shell's complaint, for a line that is empty or that the shell cannot parse.
    """
    if not command.strip():
        raise ValueError("the command line is empty")
    if os.name == "nt":  # the published client's Windows form; arguments are appended by the caller
        return ["cmd", "/c", command]
    shell = shutil.which("bash") or "/bin/sh"
    script = command if uses_positional_args(command) else f'{command} "$@"'
    check = subprocess.run([shell, "-n", "-c", script], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    if check.returncode != 0:
        why = check.stderr.strip().splitlines()[-1:] or [f"{shell} -n exited with code {check.returncode}"]
        raise ValueError(f"the shell cannot parse {command!r}: {why[0]}")
    return [shell, "-c", script, f"scaleout-{name}"]


def uses_positional_args(command: str) -> bool:
    """True when the line refers to its arguments ("$1", "${2}", "$@", "$*") outside single quotes."""
    return bool(_POSITIONAL.search(_SINGLE_QUOTED.sub("", command)))


def entry_point_argv(project: ProjectConfig, name: str) -> list[str]:
    """The shell argv of dispatcher entry point `name` (ProjectConfig.command through shell_argv); ProjectError
    naming the project file and key when the project lacks it or the shell cannot parse its line."""
    try:
        return shell_argv(project.command(name), name)
    except ValueError as exc:
        raise ProjectError(f"{project.project_file}: entry_points.{name}.command: {exc}") from exc


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment, with `python`/`python3` meaning this interpreter and its virtual environment (if any)
    activated, plus `extra`."""
    env = dict(os.environ)
    first: list[str] = []
    shim = python_shim_dir()
    if shim is not None:
        first.append(shim)
    if in_virtualenv():  # running inside a venv: let scripts' own `pip` and tools find it too
        first.append(str(Path(sys.executable).parent))
        env["VIRTUAL_ENV"] = sys.prefix
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in first]
    env["PATH"] = os.pathsep.join([*first, *rest])
    env.update(extra or {})
    return env


_shim_lock = threading.Lock()
_shim_dir: str | None = None


def python_shim_dir() -> str | None:
    """A folder (made once per process, removed at exit) whose `python` and `python3` exec this interpreter;
    None on Windows or when it cannot be made (then PATH decides, as for the published client)."""
    global _shim_dir
    if os.name == "nt":
        return None
    with _shim_lock:
        if _shim_dir is None or not os.path.isdir(_shim_dir):
            try:
                folder = tempfile.mkdtemp(prefix="scaleout-python-")
                for name in PYTHON_NAMES:
                    shim = Path(folder) / name
                    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n', encoding="utf-8")
                    shim.chmod(0o755)
            except OSError:
                return None
            atexit.register(shutil.rmtree, folder, True)
            _shim_dir = folder
        return _shim_dir


def run_command(argv: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None,
                stop: threading.Event | None = None, poll_interval: float = 0.1) -> CommandResult:
    """Run argv in `cwd` to completion and return how it ended.

    The child gets its own process group; when `stop` is set the whole group is terminated (SIGTERM, then
    SIGKILL after TERMINATE_GRACE seconds) and CommandStopped is raised. OSError when it cannot be started.
    """
    started = time.monotonic()
    proc = subprocess.Popen(list(argv), cwd=str(cwd), env=dict(env) if env is not None else None,
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    assert proc.stderr is not None
    relay = threading.Thread(target=_relay_stderr, args=(proc.stderr, tail), name="scaleout-command-stderr",
                             daemon=True)
    relay.start()
    try:
        if stop is None:
            proc.wait()
        while proc.poll() is None:
            if stop is not None and stop.wait(poll_interval):
                _terminate_group(proc)
                raise CommandStopped(f"{argv[0]} stopped")
    except BaseException:
        if proc.poll() is None:  # e.g. KeyboardInterrupt in a foreground `run build`
            _terminate_group(proc)
        raise
    finally:
        relay.join(timeout=5.0)
        proc.stderr.close()
    return CommandResult(list(argv), proc.returncode, time.monotonic() - started, list(tail))


def _relay_stderr(pipe: IO[bytes], tail: deque[str]) -> None:
    """Copy the child's stderr to ours as it comes, remembering the last lines."""
    for raw in iter(pipe.readline, b""):
        text = raw.decode("utf-8", errors="replace")
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # our stderr is closed or gone: keep collecting the tail anyway
            pass
        line = text.rstrip("\r\n")
        if line.strip():
            tail.append(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ...")


def _terminate_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there after the grace period."""
    for sig, wait in ((signal.SIGTERM, TERMINATE_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
