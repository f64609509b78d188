"""The Inference and CLI-login pages in a real browser against a real server and client: staging a model from
the form reaches the client's stage callback, the results table shows what the REST API stores, and approving
a `scaleout login` request on its page completes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import screenshot
from tests.browser.test_dashboard import WAIT_MS, open_page, table_rows
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def client(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = deployment.project("inference")
    markers = tmp_path_factory.mktemp("markers")
    seed = deployment.upload_seed(project)
    deployment.start_client("viewer", project, env={"E2E_MARKER_DIR": str(markers)})
    return {**deployment.online_clients()["viewer"], "seed": seed, "markers": markers}


def test_staging_from_the_form_and_the_results_table_match_the_api(page: Page, deployment: Deployment,
                                                                    client: dict[str, Any]) -> None:
    dep, seed, markers = deployment, client["seed"], Path(client["markers"])
    open_page(page, dep, "/inference")
    expect(page.get_by_test_id("inference-results").or_(page.locator(".empty"))).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(f"[data-testid=stage-model] option[value='{seed}']")).to_be_attached(timeout=WAIT_MS)
    page.get_by_test_id("stage-clients").fill(client["client_id"])
    page.locator("[data-testid=stage-form] button[type=submit]").click()
    expect(page.get_by_test_id("stage-started")).to_contain_text("Staging on 1 client(s)", timeout=WAIT_MS)
    wait_until(lambda: (markers / f"staged-{seed}").exists(), 30, 0.2, "the stage callback")

    run = dep.post("/api/v1/control/start_inference", {"model_id": seed, "synchronous": True, "timeout": 60,
                                                        "parameters": {"n": 2, "label": "bird"}}).json()
    page.get_by_test_id("filter-run").fill(run["command_id"])
    page.get_by_test_id("filter-run").dispatch_event("change")
    rows_shown = f"[data-testid=inference-results] tbody tr[data-prediction-id='{run['command_id']}']"
    expect(page.locator(rows_shown)).to_have_count(2, timeout=WAIT_MS)
    stored = dep.get("/api/v1/predictions/", params={"prediction_id": run["command_id"]})["result"]
    rows = table_rows(page, "inference-results")
    assert sorted(json.loads(r["cells"]["data"])["detection"]["i"] for r in rows) == \
        sorted(s["data"]["detection"]["i"] for s in stored) == [0, 1]
    assert {r["cells"]["client"] for r in rows} == {"viewer"}
    screenshot(page, "inference")


def test_approving_a_cli_login_on_its_page_completes_it(page: Page, deployment: Deployment) -> None:
    dep = deployment
    started = requests.post(f"{dep.api_url}/api/cli-auth/init", timeout=10).json()
    status = {"requestId": started["requestId"], "pollToken": started["pollToken"]}
    assert requests.get(f"{dep.api_url}/api/cli-auth/status", params=status, timeout=10).json() == \
        {"status": "pending"}
    page.goto(started["loginUrl"])
    expect(page.locator("main#app")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    expect(page.get_by_test_id("cli-login")).to_contain_text("local mode")
    page.get_by_test_id("cli-login-approve").click()
    expect(page.get_by_test_id("cli-login-done")).to_be_visible(timeout=WAIT_MS)
    done = requests.get(f"{dep.api_url}/api/cli-auth/status", params=status, timeout=10).json()
    assert done == {"status": "done", "access_token": None, "refresh_token": None, "api_url": dep.api_url}
