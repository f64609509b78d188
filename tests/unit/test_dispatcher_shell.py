"""Dispatcher command lines run through the shell, as the published client runs them: `&&`, pipes and `$VAR`
from the client's environment, `python` meaning the client's interpreter anywhere in the line, and a stop
that kills the shell and everything it started. Real command processes in tmp_path, no fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scaleout.client.dispatcher import Dispatcher
from scaleout.client.tasks import StoppedException, Task, TaskContext, activate
from scaleout.project.commands import child_environment, python_shim_dir
from scaleout.project.config import load_project
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_client_fakes import wait_until
from tests.unit.test_dispatcher import COMMANDS_YAML, _alive, make_project, model_of

pytestmark = pytest.mark.timeout(60)

RECORD_PY = '''
import json, os, sys
json.dump({"argv": sys.argv[1:], "python": sys.executable, "stdin": "" if sys.stdin.isatty() else sys.stdin.read()},
          open(sys.argv[0].replace(".py", ".json"), "w"))
'''


def _yaml(**lines: str) -> str:
    text = COMMANDS_YAML
    for task, line in lines.items():
        text = text.replace(f"command: python {task}.py", f"command: {line}")
    return text


def test_and_list_runs_both_programs_and_the_paths_go_to_the_last_as_in_the_published_client(
        tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "c", _yaml(train="python prepare.py && python train.py"),
                                        prepare=RECORD_PY))
    model, meta = Dispatcher(project).train(model_of(1.0), {"add": 1.0})
    prepared = json.loads((project.path / "prepare.json").read_text())
    trained = json.loads((project.path / "seen-train.json").read_text())
    assert prepared["argv"] == [] and prepared["python"] == sys.executable
    assert [Path(p).name for p in trained["argv"]] == ["model_in.npz", "model_out.npz"]
    assert trained["python"] == sys.executable
    np.testing.assert_allclose(model.get_model_params()[0], np.full(4, 2.0))
    assert meta["training_metadata"]["num_examples"] == 7


def test_a_failing_first_program_of_an_and_list_fails_the_task_without_running_the_second(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "c", _yaml(train="python prepare.py && python train.py"),
                                        prepare="import sys\nsys.exit('no data yet')\n"))
    with pytest.raises(Exception, match="(?s)'python prepare.py && python train.py' exited with code 1.*no data yet"):
        Dispatcher(project).train(model_of(), {})
    assert not (project.path / "seen-train.json").exists()


def test_pipe_feeds_the_validate_script_and_its_output_goes_through_the_second_stage(tmp_path: Path) -> None:
    validate = ('import sys\nfrom scaleoututil.helpers.helpers import get_helper, save_metrics\n'
                'params = get_helper("numpyhelper").load(sys.argv[1])\n'
                'print("validated", sys.stdin.read().strip())\n'
                'save_metrics({"mean": float(params[0].mean())}, sys.argv[2])\n')
    line = 'echo from-echo | python validate.py "$1" "$2" | tr a-z A-Z > validate.log'
    project = load_project(make_project(tmp_path / "c", _yaml(validate=line), validate=validate))
    assert Dispatcher(project).validate(model_of(3.0)) == {"mean": 3.0}
    assert (project.path / "validate.log").read_text() == "VALIDATED FROM-ECHO\n"


def test_variables_expand_from_the_clients_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_TEST_DATA", "/data/site a")
    project = load_project(make_project(tmp_path / "c", _yaml(predict='python record.py "$SCALEOUT_TEST_DATA" '
                                                                        "${SCALEOUT_TEST_UNSET:-fallback} $HOME"),
                                        record=RECORD_PY))
    with pytest.raises(Exception, match="wrote no prediction"):  # record.py writes no OUT; what it saw is the point
        Dispatcher(project).predict(model_of(), {})
    seen = json.loads((project.path / "record.json").read_text())
    assert seen["argv"][:3] == ["/data/site a", "fallback", os.environ["HOME"]]
    assert [Path(p).name for p in seen["argv"][3:]] == ["model_in.npz", "prediction.json"]


def test_python_anywhere_the_shell_looks_it_up_is_the_clients_interpreter(tmp_path: Path) -> None:
    shim = python_shim_dir()
    assert shim is not None and child_environment()["PATH"].split(os.pathsep)[0] == shim
    bin_dir = tmp_path / "bin"  # a different `python` earlier on the user's PATH must not win
    bin_dir.mkdir()
    (bin_dir / "python").write_text("#!/bin/sh\nexit 99\n")
    (bin_dir / "python").chmod(0o755)
    env = child_environment({"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    for name in ("python", "python3"):
        out = subprocess.run([f"{shim}/{name}", "-c", "import sys; print(sys.executable)"], env=env,
                             capture_output=True, text=True, timeout=30, check=True)
        assert out.stdout.strip() == sys.executable


@pytest.mark.parametrize("line", ["python train.py", "python train.py 2>&1 | cat && touch never"])
def test_stopping_a_shell_command_kills_the_shell_and_everything_it_started(tmp_path: Path, line: str) -> None:
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "open('pids', 'w').write(f'{os.getppid()} {os.getpid()} {child.pid}')\n"
              "time.sleep(60)\n")
    project = load_project(make_project(tmp_path / "c", _yaml(train=line), train=script))
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
    wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 3, timeout=15)
    # the shell (a single command replaces it: then the parent is us), the script, its child
    pids = [int(p) for p in pid_file.read_text().split() if int(p) != os.getpid()]
    started = time.monotonic()
    task.abort("Aborted by server")
    runner.join(10)
    assert time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], StoppedException)
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=5)
    assert not (project.path / "never").exists()
