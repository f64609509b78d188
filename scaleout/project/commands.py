"""Running a project's `command:` entry points as child processes (dispatcher tasks and `run build`).

A command line is split with shlex and run without a shell (no pipes, `&&` or `$VAR`; wrap such
lines in a script or in `bash -c '...'`). A leading `python` or `python3` means the interpreter that
runs scaleout, so the scripts see the packages the client sees (scaleoututil, numpy, ...) whatever
`python` is first on PATH; when that interpreter lives in a virtual environment, the child gets the
environment "activated" (its bin folder first on PATH, VIRTUAL_ENV set). Other programs run as written.

The child's stdout goes where ours goes; its stderr is copied to ours line by line and the last lines
are kept, because they are what a user needs to see when a command fails on a remote client.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
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
        return f"exited with code {self.returncode}"

    def tail_text(self) -> str:
        """The stderr tail as an indented block for error messages (says so when there was none)."""
        if not self.stderr_tail:
            return "It wrote nothing to stderr."
        lines = "\n".join(f"  {line}" for line in self.stderr_tail)
        return f"Last {len(self.stderr_tail)} line(s) of its stderr:\n{lines}"


def parse_command(command: str, python: str | None = None) -> list[str]:
    """Split a `command:` line into argv; a leading python/python3 becomes `python` (default: this interpreter).

    ValueError for a line that is empty or has unbalanced quotes.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"cannot split command line {command!r}: {exc}") from exc
    if not argv:
        raise ValueError("the command line is empty")
    if argv[0] in PYTHON_NAMES:
        argv[0] = python or sys.executable
    return argv


def entry_point_argv(project: ProjectConfig, name: str) -> list[str]:
    """The argv of dispatcher entry point `name` (ProjectConfig.command split by parse_command); ProjectError
    naming the project file and key when the project lacks it or its line cannot be split."""
    try:
        return parse_command(project.command(name))
    except ValueError as exc:
        raise ProjectError(f"{project.project_file}: entry_points.{name}.command: {exc}") from exc


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment, with the running interpreter's virtual environment activated, plus `extra`."""
    env = dict(os.environ)
    if in_virtualenv():  # running inside a venv: let scripts' own `python`/`pip` find it too
        bin_dir = str(Path(sys.executable).parent)
        path = env.get("PATH", "")
        if path.split(os.pathsep)[:1] != [bin_dir]:
            env["PATH"] = os.pathsep.join(p for p in (bin_dir, path) if p)
        env["VIRTUAL_ENV"] = sys.prefix
    env.update(extra or {})
    return env


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
