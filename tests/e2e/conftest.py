from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.deployment import Deployment


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One running server per test module (clients come and go per test)."""
    dep = Deployment(tmp_path_factory.mktemp("deployment"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server()
        yield dep


@pytest.fixture
def clients_stopped(deployment: Deployment) -> Iterator[None]:
    """Stop the test's clients afterwards and wait until the server sees them offline."""
    yield
    deployment.stop_clients()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    attach_deployment_logs(item, outcome.get_result())


def attach_deployment_logs(item: pytest.Item, report: pytest.TestReport) -> bool:
    """Add the deployment's process logs to a failed test's report; True when the test failed."""
    if report.when != "call" or not report.failed:
        return False
    dep = item.funcargs.get("deployment") if hasattr(item, "funcargs") else None
    if isinstance(dep, Deployment):
        report.sections.append(("deployment logs", dep.dump_logs()))
    return True
