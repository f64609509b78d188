"""scaleout.yaml validation: every problem gives a ProjectError that names the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scaleout.project.config import ProjectError, find_project_dir, load_project


def make_project(folder: Path, yaml_text: str | None, files: tuple[str, ...] = ("startup.py", "build.py")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if yaml_text is not None:
        (folder / "scaleout.yaml").write_text(yaml_text)
    for name in files:
        (folder / name).write_text(f"def {Path(name).stem}(*args):\n    return None\n")
    return folder


GOOD_YAML = "python_env: python_env.yaml\nentry_points:\n  build:\n    build.py\n  startup:\n    startup.py\n"


def test_load_project_reads_entry_points_and_python_env(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "client", GOOD_YAML)
    (folder / "python_env.yaml").write_text("dependencies: [numpy]\n")
    project = load_project(folder)
    assert project.path == folder.resolve()
    assert (project.build, project.startup, project.python_env) == ("build.py", "startup.py", "python_env.yaml")
    assert project.entry_points == {"build": "build.py", "startup": "startup.py"}
    assert project.raw["python_env"] == "python_env.yaml"


def test_load_project_without_build_or_python_env_is_fine(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "c", "entry_points:\n  startup: startup.py\n"))
    assert project.build is None and project.python_env is None


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "nope")


def test_missing_scaleout_yaml_says_what_the_folder_needs(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "c", None)
    with pytest.raises(ProjectError) as info:
        load_project(folder)
    assert str(info.value) == (
        f"{folder.resolve()} has no scaleout.yaml: a project's client folder needs one, with entry_points.build "
        "and entry_points.startup naming .py files"
    )


def test_invalid_yaml_includes_the_yaml_error(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "c", "entry_points: [unclosed\n")
    with pytest.raises(ProjectError, match="(?s)not valid YAML.*line 1"):
        load_project(folder)


@pytest.mark.parametrize("text", ["just a string\n", "- a\n- b\n", ""])
def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ProjectError, match="must be a YAML mapping"):
        load_project(make_project(tmp_path / "c", text))


@pytest.mark.parametrize("text", ["python_env: x.yaml\n", "entry_points:\n", "entry_points: {}\n"])
def test_missing_or_empty_entry_points_is_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ProjectError, match="has no entry_points"):
        load_project(make_project(tmp_path / "c", text))


def test_entry_points_without_startup_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="no entry_points.startup.*startup: startup.py"):
        load_project(make_project(tmp_path / "c", "entry_points:\n  build: build.py\n"))


def test_legacy_dispatcher_form_is_read_as_commands(tmp_path: Path) -> None:
    text = "entry_points:\n  train:\n    command: python train.py\n  startup:\n    command: python data.py\n"
    project = load_project(make_project(tmp_path / "c", text))
    assert project.commands == {"train": "python train.py", "startup": "python data.py"}
    assert project.startup is None and project.entry_points == {}
    with pytest.raises(ProjectError, match="entry_points.startup is a dispatcher command.*--dispatcher"):
        project.entry_point_file("startup")


@pytest.mark.parametrize("value", ["42", "[a.py]", "{file: startup.py}", "''"])
def test_entry_point_value_that_is_not_a_file_name_is_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(ProjectError, match="entry_points.startup must name a .py file"):
        load_project(make_project(tmp_path / "c", f"entry_points:\n  startup: {value}\n"))


def test_missing_entry_point_file_is_named(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "c", "entry_points:\n  startup: startup.py\n  build: model.py\n")
    with pytest.raises(ProjectError, match="entry_points.build names model.py, which does not exist"):
        load_project(folder)


def test_entry_point_outside_the_project_folder_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("def startup(c): pass\n")
    folder = make_project(tmp_path / "c", "entry_points:\n  startup: ../outside.py\n")
    with pytest.raises(ProjectError, match="relative to the project folder"):
        load_project(folder)


def test_entry_point_that_is_not_a_python_file_is_rejected(tmp_path: Path) -> None:
    folder = make_project(tmp_path / "c", "entry_points:\n  startup: run.sh\n", files=("run.sh",))
    with pytest.raises(ProjectError, match="must name a .py file"):
        load_project(folder)


def test_missing_python_env_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="python_env names python_env.yaml, which does not exist"):
        load_project(make_project(tmp_path / "c", GOOD_YAML))


def test_python_env_that_is_not_a_string_is_rejected(tmp_path: Path) -> None:
    text = "python_env: [a]\nentry_points:\n  startup: startup.py\n"
    with pytest.raises(ProjectError, match="python_env must name a yaml file"):
        load_project(make_project(tmp_path / "c", text))


def test_find_project_dir_returns_root_holding_scaleout_yaml(tmp_path: Path) -> None:
    make_project(tmp_path, GOOD_YAML)
    assert find_project_dir(tmp_path) == tmp_path


def test_find_project_dir_searches_client_folder_in_sorted_order(tmp_path: Path) -> None:
    make_project(tmp_path / "client" / "b" / "deep", GOOD_YAML)
    make_project(tmp_path / "client" / "a" / "x" / "y", GOOD_YAML)
    make_project(tmp_path / "client" / "c", GOOD_YAML)
    assert find_project_dir(tmp_path) == tmp_path / "client" / "a" / "x" / "y"
    make_project(tmp_path / "client", GOOD_YAML)
    assert find_project_dir(tmp_path) == tmp_path / "client"


def test_find_project_dir_without_client_project_fails(tmp_path: Path) -> None:
    (tmp_path / "client" / "empty").mkdir(parents=True)
    with pytest.raises(ProjectError, match=re.escape(f"no client folder with scaleout.yaml under {tmp_path}")):
        find_project_dir(tmp_path)
