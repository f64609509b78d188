"""Legacy dispatcher mode (`scaleout client start --dispatcher`): tasks run the project's command lines.

Instead of importing `startup(client)`, the client registers train/validate/predict callbacks that write
the task's model to a temporary folder, run `entry_points.<task>.command` from scaleout.yaml through the shell
with the file paths appended (cwd = the project folder; scaleout.project.commands says how the line is run)
and read the results back from files, as the published clients' dispatcher does:

  train     <command> IN OUT   IN, IN-metadata (JSON client settings) -> OUT (the updated model, in the
                               helper's format) and OUT-metadata (JSON training metadata with num_examples)
  validate  <command> IN OUT   IN -> OUT (a JSON object of metrics)
  predict   <command> IN OUT   IN, IN-metadata (JSON prediction parameters) -> OUT (the JSON prediction)

IN is the training model's bytes exactly as the helper wrote them (for numpyhelper an .npz file), not the
container the combiner sends. A command that exits non-zero, writes no output or writes one that cannot be
read fails the task; the error carries the last lines of the command's stderr. Aborting the task (session
stop, Ctrl-C) kills the command's process group.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaleout.client.tasks import StoppedException, TaskFailed, current_context
from scaleout.project.commands import (
    CommandResult,
    CommandStopped,
    child_environment,
    entry_point_argv,
    run_command,
)
from scaleout.project.config import DISPATCHER_TASKS, ProjectConfig, ProjectError
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import DEFAULT_HELPER, ScaleoutModel

if TYPE_CHECKING:
    from scaleout.client.edge_client import EdgeClient

logger = logging.getLogger(__name__)

REQUIRED_TASKS = ("train", "validate")
METADATA_SUFFIX = "-metadata"


class Dispatcher:
    """The dispatcher-mode callbacks for one project; `register(edge_client)` installs them.

    `default_helper` reads models whose container does not name a helper (the controller's helper_type,
    else numpyhelper); a model's own helper_type always wins, because it describes its bytes.
    """

    def __init__(self, project: ProjectConfig, *, default_helper: str | None = None) -> None:
        self.project = project
        self.default_helper = default_helper or DEFAULT_HELPER
        self.commands: dict[str, list[str]] = {}
        for task in DISPATCHER_TASKS:
            if task in REQUIRED_TASKS or task in (project.raw.get("entry_points") or {}):
                self.commands[task] = entry_point_argv(project, task)
        self.startup_command = entry_point_argv(project, "startup") if "startup" in project.commands else None

    # -- wiring ---------------------------------------------------------------------------------
    def register(self, client: EdgeClient) -> None:
        """Install train/validate/predict on an EdgeClient (predict fails clearly when not declared)."""
        client.set_train_callback(self.train)
        client.set_validate_callback(self.validate)
        client.set_predict_callback(self.predict)

    def run_startup(self, stop: threading.Event | None = None) -> None:
        """Run `entry_points.startup.command` once (e.g. to fetch data); ProjectError when it fails."""
        if self.project.python_env:
            logger.info("dispatcher mode runs the commands with %s and creates no virtual environment: install "
                        "%s's requirements into it (scaleout run install -p <client folder>)", sys.executable,
                        self.project.python_env)
        if self.startup_command is None:
            logger.info("dispatcher mode: no startup command in %s", self.project.project_file)
            return
        line = self.project.commands["startup"]
        logger.info("dispatcher mode: running startup command %r in %s", line, self.project.path)
        try:
            result = run_command(self.startup_command, self.project.path, env=child_environment(), stop=stop)
        except CommandStopped as exc:
            raise ProjectError("stopped while the startup command was running") from exc
        except OSError as exc:
            raise ProjectError(f"cannot run the startup command {line!r} of {self.project.project_file}: "
                               f"{exc}") from exc
        if not result.ok:
            raise ProjectError(f"the startup command {line!r} of {self.project.project_file} "
                               f"{result.exit_text()}. {result.tail_text()}")

    # -- the callbacks --------------------------------------------------------------------------
    def train(self, model: ScaleoutModel, settings: dict[str, Any]) -> tuple[ScaleoutModel, dict[str, Any]]:
        helper_name = self._helper_name(model)
        suffix = _model_suffix(helper_name)
        with _workspace("train") as tmp:
            folder = Path(tmp)
            model_in, model_out = folder / f"model_in{suffix}", folder / f"model_out{suffix}"
            _write_training_model(model, model_in)
            _write_json(_metadata_path(model_in), settings)
            result = self._run("train", [model_in, model_out])
            updated = self._read_model(result, model_out, helper_name)
            training_metadata = self._read_training_metadata(result, _metadata_path(model_out))
        return updated, {"exec_training": result.seconds, "training_metadata": training_metadata}

    def validate(self, model: ScaleoutModel) -> dict[str, Any]:
        suffix = _model_suffix(self._helper_name(model))
        with _workspace("validate") as tmp:
            folder = Path(tmp)
            model_in, output = folder / f"model_in{suffix}", folder / "validation.json"
            _write_training_model(model, model_in)
            result = self._run("validate", [model_in, output])
            metrics = self._read_json("validate", result, output, "metrics")
        if not isinstance(metrics, dict):
            raise TaskFailed(self._failure("validate", result, f"wrote {type(metrics).__name__} to its output "
                                           "file; write a JSON object of metrics, e.g. save_metrics(metrics, OUT)"))
        return metrics

    def predict(self, model: ScaleoutModel, parameters: dict[str, Any]) -> Any:
        if "predict" not in self.commands:
            raise TaskFailed(f"{self.project.project_file} declares no entry_points.predict: add "
                             "'predict: {command: python predict.py}' to serve prediction tasks in dispatcher mode")
        suffix = _model_suffix(self._helper_name(model))
        with _workspace("predict") as tmp:
            folder = Path(tmp)
            model_in, output = folder / f"model_in{suffix}", folder / "prediction.json"
            _write_training_model(model, model_in)
            _write_json(_metadata_path(model_in), parameters)
            result = self._run("predict", [model_in, output])
            return self._read_json("predict", result, output, "prediction")

    # -- running and reading back ---------------------------------------------------------------
    def _helper_name(self, model: ScaleoutModel) -> str:
        return model.helper_type or self.default_helper

    def _run(self, task: str, paths: list[Path]) -> CommandResult:
        argv = [*self.commands[task], *(str(p) for p in paths)]
        context = current_context()
        stop = context.task.abort_event if context is not None and context.task is not None else None
        logger.info("dispatcher: %s: running %r", task, self.project.commands[task])
        try:
            result = run_command(argv, self.project.path, env=child_environment(), stop=stop)
        except CommandStopped as exc:
            reason = context.task.abort_reason if context is not None and context.task is not None else ""
            raise StoppedException(reason or f"the {task} command was stopped") from exc
        except OSError as exc:
            raise TaskFailed(f"cannot run the {task} command {self.project.commands[task]!r} of "
                             f"{self.project.project_file} in {self.project.path}: {exc}") from exc
        logger.info("dispatcher: %s command %s after %.1f s", task, result.exit_text(), result.seconds)
        if not result.ok:
            raise TaskFailed(self._failure(task, result, result.exit_text()))
        return result

    def _failure(self, task: str, result: CommandResult, what: str) -> str:
        return f"the {task} command {self.project.commands[task]!r} {what}. {result.tail_text()}"

    def _read_model(self, result: CommandResult, path: Path, helper_name: str) -> ScaleoutModel:
        if not path.is_file() or path.stat().st_size == 0:
            raise TaskFailed(self._failure("train", result, f"wrote no model to OUT ({path.name}); save the updated "
                                           f"model there with the {helper_name}'s save(params, OUT)"))
        try:
            model = ScaleoutModel.from_file(str(path))
            if model.helper_type is None:
                model.helper_type = helper_name
            model.get_model_params()  # must be readable by its helper, or the combiner cannot aggregate it
        except Exception as exc:
            raise TaskFailed(self._failure("train", result, f"wrote a model to OUT ({path.name}) that "
                                           f"{helper_name} cannot read ({type(exc).__name__}: {exc})")) from exc
        return model

    def _read_training_metadata(self, result: CommandResult, path: Path) -> dict[str, Any]:
        expected = ("write a JSON object with num_examples > 0 to OUT-metadata, e.g. "
                    "save_metadata({'num_examples': N}, OUT)")
        if not path.is_file():
            raise TaskFailed(self._failure("train", result, f"wrote no training metadata ({path.name}); {expected}"))
        metadata = self._read_json("train", result, path, "training metadata")
        num_examples = metadata.get("num_examples") if isinstance(metadata, dict) else None
        if isinstance(num_examples, bool) or not isinstance(num_examples, int | float) or not num_examples > 0:
            raise TaskFailed(self._failure("train", result, f"wrote training metadata without a usable num_examples "
                                           f"({json.dumps(metadata)[:200]}); {expected}"))
        return metadata

    def _read_json(self, task: str, result: CommandResult, path: Path, what: str) -> Any:
        if not path.is_file():
            raise TaskFailed(self._failure(task, result, f"wrote no {what} to OUT ({path.name}); write them there "
                                           "as JSON"))
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TaskFailed(self._failure(task, result, f"wrote {what} that are not valid JSON to {path.name} "
                                           f"({exc})")) from exc


def _workspace(task: str) -> tempfile.TemporaryDirectory[str]:
    """A fresh temporary folder for one task's files, removed afterwards whatever happened."""
    return tempfile.TemporaryDirectory(prefix=f"scaleout-{task}-", ignore_cleanup_errors=True)


def _model_suffix(helper_name: str) -> str:
    """.npz for helpers that write NPZ (numpy.savez appends .npz to any other name), else .bin."""
    try:
        file_type = getattr(get_helper(helper_name), "default_file_type", "npz")
    except ValueError:
        return ".bin"
    return ".npz" if file_type == "npz" else ".bin"


def _metadata_path(path: Path) -> Path:
    return path.with_name(path.name + METADATA_SUFFIX)


def _write_training_model(model: ScaleoutModel, path: Path) -> None:
    started = time.monotonic()
    with model.get_training_model_stream() as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
    logger.debug("dispatcher: wrote %s in %.2f s", path.name, time.monotonic() - started)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")
