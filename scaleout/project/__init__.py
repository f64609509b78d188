"""Projects (compute packages): the client folder with scaleout.yaml, its packaging, loading and build."""

from scaleout.project.build import OUTPUT_DIR_ENV, build_output_dir, run_build
from scaleout.project.config import PROJECT_FILE, ProjectConfig, ProjectError, find_project_dir, load_project
from scaleout.project.environment import (
    EnvSync,
    PythonEnv,
    install_requirements,
    read_python_env,
    split_provided,
    sync_environment,
)
from scaleout.project.ignore import IGNORE_FILE, IgnoreRules, iter_package_files
from scaleout.project.loader import UserCodeError, call_entrypoint, load_entrypoint
from scaleout.project.package import DEFAULT_PACKAGE_NAME, UnsafeArchive, create_package, safe_extract

__all__ = [
    "DEFAULT_PACKAGE_NAME",
    "EnvSync",
    "IGNORE_FILE",
    "OUTPUT_DIR_ENV",
    "PROJECT_FILE",
    "IgnoreRules",
    "ProjectConfig",
    "ProjectError",
    "PythonEnv",
    "UnsafeArchive",
    "UserCodeError",
    "build_output_dir",
    "call_entrypoint",
    "create_package",
    "find_project_dir",
    "install_requirements",
    "iter_package_files",
    "load_entrypoint",
    "load_project",
    "read_python_env",
    "run_build",
    "safe_extract",
    "split_provided",
    "sync_environment",
]
