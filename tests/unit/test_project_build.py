"""Entry-point loading, `run build` / `run install` (library and CLI) on real project folders."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scaleout.cli import run_cmd  # noqa: F401  (attaches the run commands)
from scaleout.cli.groups import cli
from scaleout.project.build import OUTPUT_DIR_ENV, run_build
from scaleout.project.config import ProjectError, load_project
from scaleout.project.environment import install_requirements, read_python_env, split_provided
from scaleout.project.loader import UserCodeError, call_entrypoint, load_entrypoint

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "importer-client"


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Projects put themselves on sys.path and in sys.modules; undo that after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv(OUTPUT_DIR_ENV, raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name in {"startup", "build", "helpers_mod", "sibling"}:
            del sys.modules[name]


def make_project(folder: Path, files: dict[str, str], yaml_text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scaleout.yaml").write_text(
        yaml_text or "entry_points:\n  startup: startup.py\n  build: build.py\n"
    )
    files = {"startup.py": "def startup(client):\n    return client\n", "build.py": "def build():\n    pass\n",
             **files}
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


# ---------------------------------------------------------------- loader


def test_load_entrypoint_returns_the_function_and_keeps_sibling_imports_working(tmp_path: Path) -> None:
    project_dir = make_project(tmp_path / "p", {
        "build.py": "def build():\n    return 'built'\n",
        "startup.py": "def startup(client):\n    import sibling\n    return sibling.VALUE + client\n",
        "sibling.py": "VALUE = 40\n",
    })
    project = load_project(project_dir)
    startup = load_entrypoint(project, "startup")
    assert sys.path[0] == str(project_dir.resolve())
    assert startup(2) == 42  # lazy import of a sibling after loading
    assert load_entrypoint(project, "build")() == "built"
    assert sys.modules["startup"].__file__ == str(project_dir.resolve() / "startup.py")


def test_load_entrypoint_reimports_same_name_from_another_project(tmp_path: Path) -> None:
    first = load_project(make_project(tmp_path / "a", {"build.py": "def build():\n    return 'a'\n"}))
    second = load_project(make_project(tmp_path / "b", {"build.py": "def build():\n    return 'b'\n"}))
    assert load_entrypoint(first, "build")() == "a"
    assert load_entrypoint(second, "build")() == "b"
    assert sys.path.count(str((tmp_path / "b").resolve())) == 1


def test_load_entrypoint_errors_name_the_problem(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "p", {"build.py": "build = 3\n"},
                                        "entry_points:\n  startup: startup.py\n  build: build.py\n"))
    with pytest.raises(ProjectError, match="build.py: build is a int, not a function"):
        load_entrypoint(project, "build")
    with pytest.raises(ProjectError, match="declares no entry_points.predict"):
        load_entrypoint(project, "predict")
    (tmp_path / "p" / "startup.py").write_text("def start(client):\n    pass\n")
    with pytest.raises(ProjectError, match=r"startup.py defines no function startup\(client\)"):
        load_entrypoint(project, "startup")


def test_import_failure_is_wrapped_with_file_name_and_cause(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "p", {"build.py": "import not_a_module_xyz\n"}))
    with pytest.raises(UserCodeError, match="importing build.py .*ModuleNotFoundError.*not_a_module_xyz") as info:
        load_entrypoint(project, "build")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert "build" not in sys.modules or getattr(sys.modules["build"], "__file__", None) != str(
        (tmp_path / "p" / "build.py").resolve()
    )


def test_call_entrypoint_wraps_errors_raised_by_the_function(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "p", {"build.py": "def build():\n    raise ValueError('boom')\n"}))
    with pytest.raises(UserCodeError, match=r"build\(\) in build.py failed: ValueError: boom"):
        call_entrypoint(project, "build")


# ---------------------------------------------------------------- run_build


BUILD_WRITES = (
    "import os\n"
    "def build():\n"
    "    out = os.environ.get('SCALEOUT_BUILD_OUTPUT_DIR', '.')\n"
    "    open(os.path.join(out, 'made.txt'), 'w').write(os.getcwd())\n"
)


def test_run_build_writes_to_cwd_without_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project_dir = make_project(tmp_path / "client", {"build.py": BUILD_WRITES})
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    run_build(project_dir)
    assert (workdir / "made.txt").read_text() == str(workdir)  # cwd was not changed to the project
    assert OUTPUT_DIR_ENV not in os.environ


def test_run_build_output_dir_is_exported_then_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project_dir = make_project(tmp_path / "client", {"build.py": BUILD_WRITES})
    monkeypatch.chdir(tmp_path)
    run_build(project_dir, Path("out") / "nested")
    assert (tmp_path / "out" / "nested" / "made.txt").exists()
    assert OUTPUT_DIR_ENV not in os.environ
    monkeypatch.setenv(OUTPUT_DIR_ENV, "previous")
    run_build(project_dir, tmp_path / "other")
    assert os.environ[OUTPUT_DIR_ENV] == "previous"


def test_run_build_requires_a_build_entry_point(tmp_path: Path) -> None:
    project_dir = make_project(tmp_path / "client", {}, "entry_points:\n  startup: startup.py\n")
    with pytest.raises(ProjectError, match="declares no entry_points.build"):
        run_build(project_dir)


# ---------------------------------------------------------------- CLI with the seed's example


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "importer-client")
    return tmp_path / "importer-client"


def test_cli_run_build_of_the_example_writes_seed_npz_in_cwd(example_copy: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(example_copy)
    result = CliRunner().invoke(cli, ["run", "build", "-p", "client"])
    assert result.exit_code == 0, result.output
    assert "Created seed.npz with 10 random parameters." in result.output
    assert "Built project client (build.py:build) in " in result.output
    assert f"output dir: {example_copy}" in result.output
    from scaleoututil.helpers.helpers import get_helper

    (params,) = get_helper("numpyhelper").load(str(example_copy / "seed.npz"))
    assert params.dtype == np.float32 and params.shape == (10,)
    np.random.seed(42)
    np.testing.assert_array_equal(params, np.random.rand(10).astype(np.float32))


def test_cli_run_build_with_output_dir_writes_there(example_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(example_copy)
    result = CliRunner().invoke(cli, ["run", "build", "--path", ".", "-o", "seeds"])
    assert result.exit_code == 0, result.output
    assert (example_copy / "seeds" / "seed.npz").is_file()
    assert not (example_copy / "seed.npz").exists()
    assert f"output dir: {example_copy / 'seeds'}" in result.output


def test_cli_run_build_reports_project_errors_with_exit_code_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "build", "-p", str(tmp_path)])
    assert result.exit_code == 1
    assert "has no scaleout.yaml" in result.output
    project_dir = make_project(tmp_path / "c", {"build.py": "def build():\n    raise RuntimeError('no data')\n"})
    result = CliRunner().invoke(cli, ["run", "build", "-p", str(project_dir)])
    assert result.exit_code == 1
    assert "build() in build.py failed: RuntimeError: no data" in result.output
    assert "Traceback" in result.output  # the user's traceback helps them fix their build


def test_cli_help_texts_describe_the_commands() -> None:
    result = CliRunner().invoke(cli, ["run", "build", "--help"])
    assert result.exit_code == 0 and "SCALEOUT_BUILD_OUTPUT_DIR" in result.output and "--path" in result.output
    result = CliRunner().invoke(cli, ["run", "install", "--help"])
    assert result.exit_code == 0 and "python_env" in result.output


# ---------------------------------------------------------------- python_env / run install


def test_cli_run_install_without_python_env_has_nothing_to_do(tmp_path: Path) -> None:
    project_dir = make_project(tmp_path / "c", {"build.py": "def build():\n    pass\n"})
    result = CliRunner().invoke(cli, ["run", "install", "-p", str(project_dir)])
    assert result.exit_code == 0, result.output
    assert "Nothing to install" in result.output and "names no python_env" in result.output


def test_read_python_env_of_the_example() -> None:
    env = read_python_env(load_project(EXAMPLE / "client"))
    assert env.name == ".venv"
    assert env.build_dependencies == ("pip", "setuptools", "wheel")
    assert env.dependencies == ("numpy",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("channels: [conda-forge]\n", "unknown key.*channels"),
        ("python: 3.10\n", "python must be a string"),
        ("dependencies: numpy\n", "dependencies must be a list"),
        ("- numpy\n", "must be a YAML mapping"),
    ],
)
def test_read_python_env_rejects_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    project_dir = make_project(tmp_path / "c", {"env.yaml": text},
                               "python_env: env.yaml\nentry_points:\n  startup: startup.py\n")
    with pytest.raises(ProjectError, match=message):
        read_python_env(load_project(project_dir))


def test_split_provided_drops_our_own_packages_in_any_form() -> None:
    keep, skipped = split_provided(["scaleout", "fedn==0.33", "ScaleOutUtil>=1", "numpy", "scaleout-extra",
                                    "torch; sys_platform == 'linux'"])
    assert keep == ["numpy", "scaleout-extra", "torch; sys_platform == 'linux'"]
    assert skipped == ["scaleout", "fedn==0.33", "ScaleOutUtil>=1"]


def test_install_requirements_runs_pip_and_skips_provided_packages(tmp_path: Path) -> None:
    env_text = "build_dependencies: [scaleout]\ndependencies: [fedn, numpy]\n"
    project_dir = make_project(tmp_path / "c", {"env.yaml": env_text},
                               "python_env: env.yaml\nentry_points:\n  startup: startup.py\n")
    # numpy is installed already; --no-index keeps pip off the network.
    assert install_requirements(load_project(project_dir), pip_args=("--no-index",)) == ["numpy"]
    assert install_requirements(load_project(make_project(tmp_path / "none", {}))) == []


def test_install_requirements_failure_reports_pip_stderr(tmp_path: Path) -> None:
    project_dir = make_project(tmp_path / "c", {"env.yaml": "dependencies: [no-such-package-scaleout-test]\n"},
                               "python_env: env.yaml\nentry_points:\n  startup: startup.py\n")
    with pytest.raises(ProjectError, match="(?s)pip could not install no-such-package-scaleout-test.*exit code"):
        install_requirements(load_project(project_dir), pip_args=("--no-index",))
