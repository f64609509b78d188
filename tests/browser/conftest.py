"""Fixtures for the dashboard tests: Debian's Chromium driven by Playwright for Python, and one real
deployment (server + client processes, see tests/e2e/deployment.py) per test module.

Chromium comes from apt (scripts/install-chromium.sh), never from `playwright install`: the tests
must run on a machine without internet access once the system package is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import attach_deployment_logs, deployment  # noqa: F401  (deployment: one server per module)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_SCRIPT = ROOT / "scripts" / "install-chromium.sh"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_DOCS_ENV = "SCALEOUT_UPDATE_SCREENSHOTS"  # =1: also copy the screenshots to docs/screenshots
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """/usr/bin/chromium, installed with scripts/install-chromium.sh when missing (skip if that fails)."""
    if not CHROMIUM.exists():
        try:
            result = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
            output = (result.stdout + result.stderr)[-1500:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            output = str(exc)
        if not CHROMIUM.exists():
            pytest.skip(f"Debian's chromium is not installed and {INSTALL_SCRIPT.name} could not install it "
                        f"(run it as root with network access to a Debian mirror): {output}")
    return str(CHROMIUM)


@pytest.fixture(scope="package")  # stopped after tests/browser: Playwright's sync API holds an event loop
def browser(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium for the dashboard tests, with a fresh profile (user-data-dir)."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new tab; confirm() dialogs are accepted; an uncaught JavaScript error fails the test."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    tab.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(tab: Any, name: str, docs: bool = True) -> Path:
    """Save a full-page screenshot under test-artifacts/screenshots/ (and docs/screenshots/ when
    SCALEOUT_UPDATE_SCREENSHOTS=1, so a normal test run leaves the tracked images alone)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get(UPDATE_DOCS_ENV) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    if attach_deployment_logs(item, outcome.get_result()):
        tab = item.funcargs.get("page") if hasattr(item, "funcargs") else None
        if tab is not None:
            try:
                screenshot(tab, f"failed-{item.name}", docs=False)
            except Exception:  # the page may be gone; the report matters more
                pass
