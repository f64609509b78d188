"""Dispatcher mode: the file contract with real command processes (tiny scripts in tmp_path), task outcomes
through the real TaskExecutor and a real gRPC combiner fake, scaleout.yaml checks and command builds."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scaleout.cli.main import cli
from scaleout.client.connection import ClientIdentity, Connection, GrpcTarget, Outbox
from scaleout.client.dispatcher import Dispatcher
from scaleout.client.edge_client import EdgeClient
from scaleout.client.registration import RegistrationError
from scaleout.client.runtime import ClientConfig, ClientRuntime
from scaleout.client.tasks import StoppedException, Task, TaskContext, TaskExecutor, TaskFailed, activate
from scaleout.project.build import run_build
from scaleout.project.commands import STDERR_TAIL_LINES, shell_argv, uses_positional_args
from scaleout.project.config import ProjectConfig, ProjectError, load_project
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel
from tests.unit.test_client_fakes import (
    HELPER,
    FakeCombiner,
    FakeController,
    assignment,
    running_combiner,
    running_controller,
    seed_model,
    wait_until,
)

COMMANDS_YAML = """entry_points:
  train:
    command: python train.py
  validate:
    command: python validate.py
  predict:
    command: python predict.py
"""

# Each script records what it was given in seen-<task>.json (in the project folder, its cwd).
TRAIN_PY = '''
import json, os, sys
from scaleoututil.helpers.helpers import get_helper, save_metadata
helper = get_helper("numpyhelper")
model_in, model_out = sys.argv[1], sys.argv[2]
settings = json.load(open(model_in + "-metadata"))
json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "settings": settings, "python": sys.executable},
          open("seen-train.json", "w"))
params = helper.load(model_in)
helper.save([p + settings.get("add", 1.0) for p in params], model_out)
save_metadata({"num_examples": 7, "loss": 0.5}, model_out)
'''
VALIDATE_PY = '''
import json, sys
from scaleoututil.helpers.helpers import get_helper, save_metrics
params = get_helper("numpyhelper").load(sys.argv[1])
json.dump({"argv": sys.argv[1:]}, open("seen-validate.json", "w"))
save_metrics({"mean": float(params[0].mean()), "accuracy": 0.9}, sys.argv[2])
'''
PREDICT_PY = '''
import json, sys
from scaleoututil.helpers.helpers import get_helper
params = get_helper("numpyhelper").load(sys.argv[1])
parameters = json.load(open(sys.argv[1] + "-metadata"))
json.dump({"first": float(params[0][0]), "parameters": parameters}, open(sys.argv[2], "w"))
'''


def make_project(folder: Path, yaml_text: str = COMMANDS_YAML, **scripts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scaleout.yaml").write_text(yaml_text)
    files = {"train.py": TRAIN_PY, "validate.py": VALIDATE_PY, "predict.py": PREDICT_PY}
    files.update({f"{name}.py": text for name, text in scripts.items()})
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> ProjectConfig:
    return load_project(make_project(tmp_path / "client"))


def model_of(values: float = 1.0) -> ScaleoutModel:
    return seed_model("seed-model", values)


def failing(body: str) -> str:
    return f"import sys\n{body}\n"


# -- the file contract --------------------------------------------------------------------------
def test_train_runs_the_command_with_in_out_paths_settings_and_returns_the_scripts_model(
        project: ProjectConfig) -> None:
    dispatcher = Dispatcher(project)
    model, meta = dispatcher.train(model_of(1.0), {"add": 2.5})

    seen = json.loads((project.path / "seen-train.json").read_text())
    model_in, model_out = seen["argv"]
    assert Path(model_in).name == "model_in.npz" and Path(model_out).name == "model_out.npz"
    assert Path(seen["cwd"]) == project.path
    assert seen["settings"] == {"add": 2.5}
    assert seen["python"] == sys.executable  # a leading `python` is the interpreter running scaleout
    assert not Path(model_in).parent.exists()  # the task's temporary folder is removed
    np.testing.assert_allclose(model.get_model_params()[0], np.full(4, 3.5))
    assert model.helper_type == "numpyhelper"
    assert meta["training_metadata"] == {"num_examples": 7, "loss": 0.5}
    assert meta["exec_training"] > 0


def test_validate_returns_the_metrics_json_and_predict_gets_its_parameters(project: ProjectConfig) -> None:
    dispatcher = Dispatcher(project)
    assert dispatcher.validate(model_of(4.0)) == {"mean": 4.0, "accuracy": 0.9}
    assert Path(json.loads((project.path / "seen-validate.json").read_text())["argv"][1]).name == "validation.json"
    assert dispatcher.predict(model_of(2.0), {"rows": 3}) == {"first": 2.0, "parameters": {"rows": 3}}


def test_failing_command_reports_exit_code_and_the_last_stderr_lines(tmp_path: Path) -> None:
    script = failing("for i in range(30):\n    print(f'error line {i}', file=sys.stderr)\nsys.exit(3)")
    dispatcher = Dispatcher(load_project(make_project(tmp_path / "c", train=script)))
    with pytest.raises(TaskFailed) as info:
        dispatcher.train(model_of(), {})
    message = str(info.value)
    assert "the train command 'python train.py' exited with code 3" in message
    assert f"Last {STDERR_TAIL_LINES} line(s) of its stderr" in message
    assert "error line 29" in message and "error line 10" in message and "error line 9" not in message


def test_command_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    script = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    dispatcher = Dispatcher(load_project(make_project(tmp_path / "c", validate=script)))
    with pytest.raises(TaskFailed, match="was killed by signal SIGKILL.*wrote nothing to stderr"):
        dispatcher.validate(model_of())


@pytest.mark.parametrize(("script", "expected"), [
    ("import sys\nprint('forgot to save', file=sys.stderr)\n", "wrote no model to OUT.*forgot to save"),
    ("import sys\nopen(sys.argv[2], 'wb').write(b'not a model')\n", "numpyhelper cannot read"),
    ("import sys\nimport numpy as np\nnp.savez(sys.argv[2], **{'0': np.ones(4)})\n", "wrote no training metadata"),
    ("import sys\nimport numpy as np\nnp.savez(sys.argv[2], **{'0': np.ones(4)})\n"
     "open(sys.argv[2] + '-metadata', 'w').write('{\"loss\": 1}')\n", "without a usable num_examples"),
])
def test_train_output_that_breaks_the_contract_fails_the_task(tmp_path: Path, script: str, expected: str) -> None:
    dispatcher = Dispatcher(load_project(make_project(tmp_path / "c", train=script)))
    with pytest.raises(TaskFailed, match=f"(?s){expected}"):
        dispatcher.train(model_of(), {})


@pytest.mark.parametrize(("script", "expected"), [
    ("pass\n", "wrote no metrics"),
    ("import sys\nopen(sys.argv[2], 'w').write('{broken')\n", "not valid JSON"),
    ("import sys\nopen(sys.argv[2], 'w').write('[1, 2]')\n", "wrote list.*JSON object of metrics"),
])
def test_validate_output_that_breaks_the_contract_fails_the_task(tmp_path: Path, script: str, expected: str) -> None:
    dispatcher = Dispatcher(load_project(make_project(tmp_path / "c", validate=script)))
    with pytest.raises(TaskFailed, match=expected):
        dispatcher.validate(model_of())


def test_command_that_cannot_be_started_fails_with_the_shells_reason(tmp_path: Path) -> None:
    text = COMMANDS_YAML.replace("python train.py", "./no-such-program")
    dispatcher = Dispatcher(load_project(make_project(tmp_path / "c", text)))
    with pytest.raises(TaskFailed, match="(?s)the train command './no-such-program' exited with code 127 "
                                         r"\(the shell found no such program.*no-such-program: No such file"):
        dispatcher.train(model_of(), {})


def test_aborting_the_task_kills_the_command_and_its_children(tmp_path: Path) -> None:
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "open('pids', 'w').write(f'{child.pid}')\n"
              "time.sleep(60)\n")
    project = load_project(make_project(tmp_path / "c", train=script))
    task = Task(pb.TaskRequest(correlation_id="t-1", type="Scaleout_ModelUpdate"))
    outcome: list[BaseException] = []

    def run() -> None:
        with activate(TaskContext.for_task(task)):
            try:
                Dispatcher(project).train(model_of(), {})
            except BaseException as exc:
                outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    pid_file = project.path / "pids"
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=10)
    grandchild = int(pid_file.read_text())
    started = time.monotonic()
    task.abort("Aborted by server")
    runner.join(10)
    assert time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], StoppedException)
    assert str(outcome[0]) == "Aborted by server"
    wait_until(lambda: not _alive(grandchild), timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_shell_argv_appends_the_paths_unless_the_line_places_them_and_refuses_what_the_shell_cannot_parse(
        ) -> None:
    argv = shell_argv("python train.py && python post.py", "train")
    assert argv[1:] == ["-c", 'python train.py && python post.py "$@"', "scaleout-train"]
    assert shell_argv('python a.py "$1" | python b.py "$2"')[2] == 'python a.py "$1" | python b.py "$2"'
    assert uses_positional_args('x "${2}"') and uses_positional_args("x $@")
    assert not uses_positional_args("python t.py | awk '{print $1}'")  # single-quoted: awk's, not ours
    assert not uses_positional_args(r"echo \$1")
    with pytest.raises(ValueError, match="the shell cannot parse \"python 'unclosed\""):
        shell_argv("python 'unclosed")
    with pytest.raises(ValueError, match="empty"):
        shell_argv("   ")


# -- scaleout.yaml ------------------------------------------------------------------------------
def test_dispatcher_project_loads_without_a_startup_file(project: ProjectConfig) -> None:
    assert project.commands == {"train": "python train.py", "validate": "python validate.py",
                                "predict": "python predict.py"}
    assert project.entry_points == {} and project.startup is None and project.build is None


@pytest.mark.parametrize(("entry", "expected"), [
    ("  predict:\n    command: python predict.py\n", "declares no entry_points.train: dispatcher mode"),
    ("  train: train.py\n", "entry_points.train is str 'train.py', but dispatcher mode.*needs a mapping"),
    ("  train:\n    command: python 'train.py\n", "entry_points.train.command: the shell cannot parse"),
])
def test_missing_or_unusable_train_entry_point_is_an_error_naming_file_and_key(tmp_path: Path, entry: str,
                                                                               expected: str) -> None:
    text = "entry_points:\n" + entry + "  validate:\n    command: python validate.py\n"
    project = load_project(make_project(tmp_path / "c", text))
    with pytest.raises(ProjectError, match=f"^{project.project_file}.*{expected}"):
        Dispatcher(project)


@pytest.mark.parametrize(("entry", "expected"), [
    ("  train:\n    command: 3\n", "entry_points.train.command must be a command line such as 'python train.py'"),
    ("  train:\n    cmd: python train.py\n", "entry_points.train must name a .py file.*{command: python train.py}"),
    ("  train: [python, train.py]\n", "entry_points.train must name a .py file"),
])
def test_malformed_command_entry_point_is_refused_when_loading(tmp_path: Path, entry: str, expected: str) -> None:
    folder = make_project(tmp_path / "c", "entry_points:\n" + entry)
    with pytest.raises(ProjectError, match=f"scaleout.yaml: {expected}"):
        load_project(folder)


def test_importer_start_of_a_dispatcher_project_points_to_the_flag(project: ProjectConfig) -> None:
    with pytest.raises(ProjectError, match="no entry_points.startup.*start the client with --dispatcher"):
        project.entry_point_file("startup")


def test_predict_without_a_command_fails_the_task_with_the_entry_to_add(tmp_path: Path) -> None:
    text = "entry_points:\n  train:\n    command: python train.py\n  validate:\n    command: python validate.py\n"
    dispatcher = Dispatcher(load_project(make_project(tmp_path / "c", text)))
    with pytest.raises(TaskFailed, match="no entry_points.predict.*predict: {command: python predict.py}"):
        dispatcher.predict(model_of(), {})


def test_startup_command_runs_once_and_its_failure_names_the_stderr(tmp_path: Path) -> None:
    text = COMMANDS_YAML + "  startup:\n    command: python startup.py\n"
    ok = load_project(make_project(tmp_path / "ok", text, startup="open('started', 'a').write('x')\n"))
    Dispatcher(ok).run_startup()
    assert (ok.path / "started").read_text() == "x"
    bad = load_project(make_project(tmp_path / "bad", text, startup=failing("sys.exit('no data folder')")))
    with pytest.raises(ProjectError, match="(?s)startup command 'python startup.py'.*exited with code 1.*no data"):
        Dispatcher(bad).run_startup()


# -- `run build` with a command entry point -------------------------------------------------------
BUILD_PY = '''
import os
import numpy as np
from scaleoututil.helpers.helpers import get_helper
get_helper("numpyhelper").save([np.arange(3.0)], os.path.join(os.environ["SCALEOUT_BUILD_OUTPUT_DIR"], "seed.npz"))
'''


def test_run_build_runs_a_build_command_in_the_project_with_the_output_dir_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_project(tmp_path / "p" / "client", COMMANDS_YAML + "  build:\n    command: python build.py\n",
                          build=BUILD_PY)
    monkeypatch.chdir(tmp_path / "p")
    result = CliRunner().invoke(cli, ["run", "build", "-p", "client"])
    assert result.exit_code == 0, result.output
    assert "command 'python build.py'" in result.output
    np.testing.assert_array_equal(HELPER.load(tmp_path / "p" / "seed.npz")[0], np.arange(3.0))
    run_build(folder, tmp_path / "out")
    assert (tmp_path / "out" / "seed.npz").is_file()


def test_failing_build_command_reports_its_stderr(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "c", COMMANDS_YAML + "  build:\n    command: python build.py\n",
                          build=failing("print('disk full', file=sys.stderr)\nsys.exit(2)"))
    with pytest.raises(ProjectError, match="(?s)build command 'python build.py'.*exited with code 2.*disk full"):
        run_build(folder, tmp_path / "out")


# -- through the executor and the runtime ---------------------------------------------------------
@dataclass
class Env:
    fake: FakeCombiner
    executor: TaskExecutor
    outbox: Outbox

    def run(self, **fields: str) -> Task:
        task = Task(pb.TaskRequest(correlation_id="corr-1", model_id="seed-model", **fields))
        self.executor.run(task)
        self.outbox.flush(5)
        return task


@pytest.fixture
def executor_env(tmp_path: Path, project: ProjectConfig) -> Iterator[Env]:
    with running_combiner() as (fake, port):
        fake.add_model(seed_model("seed-model", 1.0))
        connection = Connection(GrpcTarget("127.0.0.1", port), ClientIdentity("client-1", "site-a"))
        outbox = Outbox(connection)
        client = EdgeClient()
        client._attach("client-1", "site-a", outbox)
        Dispatcher(project).register(client)
        try:
            yield Env(fake, TaskExecutor(connection, outbox, client._callbacks, tmp_path / "cache"), outbox)
        finally:
            outbox.close(1)
            connection.close()


def test_dispatcher_training_task_uploads_the_commands_model_with_its_num_examples(executor_env: Env) -> None:
    task = executor_env.run(type="Scaleout_ModelUpdate", data=json.dumps({"client_settings": {"add": 0.5}}))
    assert task.status == "COMPLETED", task.response
    [update] = executor_env.fake.updates
    meta = json.loads(update.meta)
    assert meta["training_metadata"]["num_examples"] == 7
    data, _ = executor_env.fake.uploads[update.model_update_id]
    np.testing.assert_allclose(ScaleoutModel.from_bytes(data).get_model_params(HELPER)[0], np.full(4, 1.5))


def test_dispatcher_validation_task_sends_the_metrics(executor_env: Env) -> None:
    task = executor_env.run(type="Scaleout_Validation")
    assert task.status == "COMPLETED", task.response
    [validation] = executor_env.fake.validations
    assert json.loads(validation.data) == {"mean": 1.0, "accuracy": 0.9}


def test_failed_command_ends_the_task_failed_with_the_stderr_in_the_response(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "c", train=failing("print('CUDA out of memory', file=sys.stderr)\nsys.exit(1)"))
    with running_combiner() as (fake, port):
        fake.add_model(seed_model("seed-model", 1.0))
        connection = Connection(GrpcTarget("127.0.0.1", port), ClientIdentity("client-1", "site-a"))
        outbox = Outbox(connection)
        client = EdgeClient()
        Dispatcher(load_project(folder)).register(client)
        try:
            env = Env(fake, TaskExecutor(connection, outbox, client._callbacks, tmp_path / "cache"), outbox)
            task = env.run(type="Scaleout_ModelUpdate")
        finally:
            outbox.close(1)
            connection.close()
    assert task.status == "FAILED"
    error = json.loads(task.response)["error"]
    assert "exited with code 1" in error and "CUDA out of memory" in error
    assert not fake.updates


def test_runtime_in_dispatcher_mode_refuses_to_start_without_a_validate_command(tmp_path: Path) -> None:
    make_project(tmp_path / "client", "entry_points:\n  train:\n    command: python train.py\n")
    with running_combiner() as (_, port), \
            running_controller(FakeController({"POST /api/v1/clients/add": [assignment(port)]})) as url:
        config = ClientConfig(api_url=url, local_package=True, workdir=tmp_path, dispatcher=True)
        with pytest.raises(RegistrationError, match="scaleout.yaml declares no entry_points.validate"):
            ClientRuntime(config, echo=lambda text: None).run()


def test_cli_help_documents_the_dispatcher_flag() -> None:
    result = CliRunner().invoke(cli, ["client", "start", "--help"])
    assert result.exit_code == 0
    assert "--dispatcher" in result.output and "command:" in result.output
