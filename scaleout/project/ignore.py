"""`.scaleoutignore`: which files of a project folder go into its compute package.

Patterns follow .gitignore rules (via `pathspec`), because users already know them: a bare name matches at
any depth, `dir/` matches directories only, `/name` anchors at the project root, `!pattern` re-includes.
Ignored directories are pruned, so (as in git) a file below an ignored directory cannot be re-included.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pathspec

IGNORE_FILE = ".scaleoutignore"


class IgnoreRules:
    """Compiled ignore patterns of one project folder (no patterns: nothing is ignored)."""

    def __init__(self, lines: Iterable[str] = ()) -> None:
        # Blank lines and '#' comments are skipped by the gitignore rules themselves; strip trailing
        # whitespace and Windows line ends so files edited anywhere behave the same.
        self.patterns = [line.rstrip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)

    @classmethod
    def from_project(cls, path: Path | str) -> IgnoreRules:
        """The rules in `path/.scaleoutignore` (only the project root's file counts)."""
        ignore_file = Path(path) / IGNORE_FILE
        if not ignore_file.is_file():
            return cls()
        return cls(ignore_file.read_text(encoding="utf-8").splitlines())

    def is_ignored(self, relative_posix_path: str, is_dir: bool = False) -> bool:
        """Whether a path relative to the project root (posix separators) is excluded from the package."""
        path = relative_posix_path.strip("/")
        if not path or path == ".":
            return False
        return self._spec.match_file(path + "/" if is_dir else path)


def iter_package_files(path: Path | str, exclude: Iterable[Path | str] = ()) -> Iterator[Path]:
    """The files of project folder `path` that belong in its package, as sorted paths relative to `path`.

    Ignored directories are not descended. Symlinked directories are not followed (a package must not
    reach outside its folder); symlinked files count as files. Paths in `exclude` (e.g. the archive being
    written into the folder itself) are always skipped.
    """
    root = Path(path).resolve()
    rules = IgnoreRules.from_project(root)
    excluded = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for current, dirnames, filenames in os.walk(root):
        current_path = Path(current)
        relative_dir = current_path.relative_to(root)
        kept_dirs = []
        for name in sorted(dirnames):
            relative = relative_dir / name
            if not (current_path / name).is_symlink() and not rules.is_ignored(relative.as_posix(), is_dir=True):
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in filenames:
            full = current_path / name
            relative = relative_dir / name
            if full.resolve() in excluded or full in excluded or not full.is_file():
                continue
            if not rules.is_ignored(relative.as_posix(), is_dir=False):
                found.append(relative)
    yield from sorted(found, key=lambda p: p.as_posix())
