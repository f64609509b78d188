"""The dashboard in a real browser (Debian's Chromium) against a real server with real clients.

The tests read what the pages show (table cells, and the values SVG chart points carry as data
attributes) and compare it with what the REST API answers, so a page that shows stale, invented or
misassigned numbers fails. They run in file order on one deployment: empty states first, then a
package upload, then clients join and a session is started from the form.
"""

from __future__ import annotations

import json
import re
import statistics
import tarfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import screenshot
from tests.e2e.cluster import assert_params, download_params, seed_params
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

WAIT_MS = 20_000
CLIENT_ENV = {"alpha": {"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"},
              "beta": {"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "3"}}
STEPS = {"E2E_TRAIN_STEPS": "4", "E2E_STEP_SECONDS": "0.3"}  # ~1.2 s of training per round: visible live


def open_page(page: Page, dep: Deployment, path: str) -> None:
    page.goto(dep.api_url + path)
    expect(page.locator("main#app")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)


def rest_list(dep: Deployment, resource: str, **filters: str) -> list[dict[str, Any]]:
    return dep.get(f"/api/v1/{resource}/", params=filters)["result"]


def table_rows(page: Page, testid: str) -> list[dict[str, Any]]:
    """Rows of a dashboard table: the row's data attributes plus its cells by column key."""
    return page.locator(f"[data-testid={testid}] tbody tr").evaluate_all(
        """rows => rows.map(r => ({data: {...r.dataset},
             cells: Object.fromEntries([...r.cells].map(c => [c.dataset.col, c.innerText.trim()])),
             titles: Object.fromEntries([...r.cells].map(c => [c.dataset.col,
                                                               c.querySelector('[title]')?.title]))}))""")


def chart_points(page: Page, testid: str, metric: str) -> list[dict[str, Any]]:
    return page.locator(f"[data-testid={testid}][data-metric='{metric}'] circle.point").evaluate_all(
        "cs => cs.map(c => ({...c.dataset}))")


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(deployment: Deployment) -> Path:
    return deployment.project("weighted")


@pytest.fixture(scope="module")
def seed_model(deployment: Deployment, project: Path) -> str:
    """The seed model the Models page test uploaded (or one uploaded with the CLI when it ran alone)."""
    models = rest_list(deployment, "models")
    return models[0]["model_id"] if models else deployment.upload_seed(project)


@pytest.fixture(scope="module")
def clients(deployment: Deployment, project: Path, seed_model: str) -> dict[str, dict[str, Any]]:
    """Two connected clients (alpha validates to 0.51, beta to 0.54), and a seed model."""
    procs = [deployment.start_client(name, project, env={**env, **STEPS}, wait=False)
             for name, env in CLIENT_ENV.items()]
    for proc in procs:
        deployment.wait_online([proc.name.removeprefix("client-")], proc=proc)
    return deployment.online_clients()


# -- tests ----------------------------------------------------------------------------------------
def test_fresh_deployment_pages_say_what_to_do_next(page: Page, deployment: Deployment) -> None:
    dep = deployment
    hint = f"scaleout client start --api-url {dep.api_url}"
    open_page(page, dep, "/")
    expect(page.locator(".empty", has_text="No clients connected yet")).to_contain_text(hint, timeout=WAIT_MS)
    expect(page.locator(".empty", has_text="No model yet")).to_contain_text("scaleout model set-active")
    expect(page.locator(".empty", has_text="No compute package is active")).to_be_visible()
    expect(page.get_by_test_id("no-running-session")).to_be_visible()
    expect(page.get_by_test_id("combiners")).to_contain_text("combiner")  # the server's own combiner
    screenshot(page, "empty-overview", docs=False)

    for path, text in (("/sessions", "No sessions yet"), ("/models", "No models yet"),
                       ("/packages", "No compute package yet"), ("/clients", "No clients connected yet")):
        open_page(page, dep, path)
        expect(page.locator(".empty", has_text=text)).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".empty", has_text="No clients connected yet")).to_contain_text(hint)

    open_page(page, dep, "/sessions/no-such-session")
    expect(page.locator(".error")).to_contain_text("no-such-session not found", timeout=WAIT_MS)

    # actions without clients or models: the server's own explanations reach the user
    open_page(page, dep, "/actions")
    expect(page.get_by_test_id("command-clients")).to_contain_text("No client is online", timeout=WAIT_MS)
    page.get_by_test_id("command-name").fill("echo")
    page.get_by_test_id("run-command").click()
    expect(page.get_by_test_id("command-status")).to_contain_text("no client is connected", timeout=WAIT_MS)
    page.get_by_test_id("start-session").click()
    expect(page.get_by_test_id("start-status")).to_contain_text("upload a seed model first", timeout=WAIT_MS)
    assert dep.get("/api/v1/sessions/count") == 0


def _package(project: Path, out: Path, with_manifest: bool = True) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted((project / "client").iterdir()):
            if path.is_file() and (with_manifest or path.name != "scaleout.yaml"):
                tar.add(path, arcname=f"client/{path.name}")
    return out


def test_packages_upload_in_chunks_and_activate(page: Page, deployment: Deployment, project: Path,
                                                tmp_path: Path) -> None:
    dep = deployment
    open_page(page, dep, "/packages")
    file_input = page.get_by_test_id("package-file")
    status = page.get_by_test_id("package-upload-status")

    (tmp_path / "notes.txt").write_text("not a package")
    file_input.set_input_files(str(tmp_path / "notes.txt"))
    page.get_by_role("button", name="Upload and activate").click()
    expect(status).to_contain_text("notes.txt is not a package archive")

    file_input.set_input_files(str(_package(project, tmp_path / "broken.tgz", with_manifest=False)))
    page.get_by_role("button", name="Upload and activate").click()
    expect(status).to_contain_text("has no scaleout.yaml", timeout=WAIT_MS)  # the server's message
    assert dep.get("/api/v1/packages/count") == 0

    for name in ("v1", "v2"):
        file_input.set_input_files(str(_package(project, tmp_path / f"{name}.tgz")))
        page.get_by_test_id("package-name").fill(name)
        page.get_by_role("button", name="Upload and activate").click()
        expect(status).to_contain_text(f"Package {name} uploaded and active", timeout=WAIT_MS)
    expect(page.locator("[data-testid=packages] tbody tr")).to_have_count(2, timeout=WAIT_MS)
    active = dep.get("/api/v1/packages/active")
    assert active["name"] == "v2"

    rows = {r["cells"]["name"]: r for r in table_rows(page, "packages")}
    expect(page.locator(f"tr[data-package-id='{active['package_id']}']")).to_have_attribute("data-active", "true")
    assert rows["v2"]["titles"]["checksum"] == active["checksum"]
    v1 = next(p for p in rest_list(dep, "packages") if p["name"] == "v1")
    page.locator(f"tr[data-package-id='{v1['package_id']}'] [data-testid=activate]").click()
    wait_until(lambda: dep.get("/api/v1/packages/active")["name"] == "v1", 10, what="v1 to become active")
    expect(page.locator(f"tr[data-package-id='{v1['package_id']}']")).to_have_attribute("data-active", "true",
                                                                                          timeout=WAIT_MS)
    screenshot(page, "packages")


def test_seed_model_uploads_from_the_models_page(page: Page, deployment: Deployment, project: Path) -> None:
    dep = deployment
    dep.cli("run", "build", "-p", "client", cwd=project)
    open_page(page, dep, "/models")
    page.get_by_role("button", name="Upload seed model").click()
    expect(page.locator("form.inline")).to_contain_text("Choose a seed model file first")
    page.get_by_test_id("seed-file").set_input_files(str(project / "seed.npz"))
    page.get_by_role("button", name="Upload seed model").click()
    expect(page.locator("form.inline")).to_contain_text("stored.", timeout=WAIT_MS)
    (model,) = rest_list(dep, "models")
    expect(page.locator("form.inline")).to_contain_text(f"Seed model {model['model_id']} stored.")
    assert_params(download_params(dep, model["model_id"]), seed_params(), added=0.0)
    expect(page.get_by_test_id("model-trail")).to_contain_text(model["model_id"][:8], timeout=WAIT_MS)


def test_session_started_from_the_form_fills_table_and_charts_live(page: Page, deployment: Deployment,
                                                                   clients: dict[str, dict[str, Any]]) -> None:
    dep = deployment
    open_page(page, dep, "/actions")
    form = page.get_by_test_id("start-form")
    status = page.get_by_test_id("start-status")

    # checked in the page first (the same rules as the CLI options) ...
    form.locator("[name=rounds]").fill("0")
    form.locator("[name=aggregator_kwargs]").fill("[1, 2]")
    page.get_by_test_id("start-session").click()
    expect(form.locator("[data-field=rounds] .field-error")).to_have_text(
        "Rounds must be a whole number ≥ 1, got 0.")
    expect(form.locator("[data-field=aggregator_kwargs] .field-error")).to_contain_text("must be a JSON object")
    expect(form.locator("[name=rounds]")).to_have_attribute("aria-invalid", "true")
    # ... then by the server, whose message is shown as it is
    form.locator("[name=rounds]").fill("3")
    form.locator("[name=aggregator_kwargs]").fill("")
    form.locator("[name=aggregator]").fill("nope")
    page.get_by_test_id("start-session").click()
    expect(status).to_contain_text("unknown aggregator 'nope'; available: ", timeout=WAIT_MS)
    assert dep.get("/api/v1/sessions/count") == 0

    form.locator("[name=aggregator]").fill("fedavg")
    form.locator("[name=name]").fill("from-the-browser")
    form.locator("[name=round_timeout]").fill("60")
    form.locator("[name=min_clients]").fill("2")
    page.get_by_test_id("start-session").click()
    expect(page.get_by_test_id("session-started")).to_contain_text("from-the-browser", timeout=WAIT_MS)
    session_id = page.get_by_test_id("session-started").get_attribute("data-session-id")
    assert session_id
    config = dep.get(f"/api/v1/sessions/{session_id}")["session_config"]
    assert (config["rounds"], config["round_timeout"], config["clients_required"], config["aggregator"]) == \
        (3, 60, 2, "fedavg")

    page.get_by_test_id("session-link").click()
    page.wait_for_url(f"**/sessions/{session_id}")
    expect(page.locator("main#app")).to_have_attribute("data-ready", "true")
    page.evaluate("window.__sameDocument = true")

    snapshots: list[tuple[tuple[str, str], ...]] = []

    def complete() -> bool:
        rows = table_rows(page, "rounds")
        snapshots.append(tuple((r["data"]["round"], r["data"]["status"]) for r in rows))
        finished = len(rows) == 3 and all(r["data"]["status"] == "Finished" for r in rows)
        return finished and len(chart_points(page, "validation-chart", "validation_accuracy")) == 9

    wait_until(complete, 90, 0.2, "3 finished rounds and a full validation chart on the page")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating in place"
    assert any(len(s) < 3 or any(status != "Finished" for _, status in s) for s in snapshots), \
        f"the page never showed the session in progress: {snapshots[:3]}"

    # the round table shows what the API holds
    rounds = {r["round_number"]: r for r in dep.rounds(session_id)}
    validations = rest_list(dep, "validations", session_id=session_id)
    number_of = {r["round_id"]: n for n, r in rounds.items()}
    for row in table_rows(page, "rounds"):
        rest = rounds[int(row["data"]["round"])]
        combiner = rest["combiners"][0]
        assert row["data"]["status"] == rest["status"] == "Finished"
        assert row["cells"]["asked"] == str(combiner["clients"]) == "2"
        assert row["cells"]["answered"] == f"{combiner['updates_received']} / {combiner['updates_expected']}"
        assert row["cells"]["aggregator"] == rest["round_config"]["aggregator"] == "fedavg"
        assert row["cells"]["duration"] == f"{rest['round_data']['duration']:.2f} s"
        assert row["titles"]["model"] == rest["new_model_id"]
        mine = [v["data"]["validation_accuracy"] for v in validations if v["round_id"] == rest["round_id"]]
        assert row["cells"]["metric-validation_accuracy"] == f"{statistics.mean(mine):.4f}"

    # the validation chart: every client's value per round, and their mean
    for metric in ("validation_accuracy", "mean_param"):
        points = chart_points(page, "validation-chart", metric)
        shown = sorted((p["series"], int(p["x"]), float(p["y"])) for p in points if p["series"] != "mean")
        expected = sorted((v["sender"]["name"], number_of[v["round_id"]], v["data"][metric]) for v in validations)
        assert shown == expected
        means = {int(p["x"]): float(p["y"]) for p in points if p["series"] == "mean"}
        for number in rounds:
            values = [v["data"][metric] for v in validations if number_of[v["round_id"]] == number]
            assert means[number] == pytest.approx(statistics.mean(values))
    assert {float(p["y"]) for p in chart_points(page, "validation-chart", "validation_accuracy")
            if p["series"] != "mean"} == {0.51, 0.54}

    # the training chart: every log_metric value, per client, at its step and round
    metrics = rest_list(dep, "metrics", session_id=session_id, key="train_loss")
    points = chart_points(page, "training-chart", "train_loss")
    assert len(metrics) == len(points) == 2 * 3 * 4
    assert sorted((p["series"], int(p["round"]), int(p["step"]), float(p["y"])) for p in points) == \
        sorted((m["sender"]["name"], number_of[m["round_id"]], m["step"], m["value"]) for m in metrics)
    screenshot(page, "session")

    page.get_by_test_id("training-round").select_option("2")
    expect(page.locator("[data-testid=training-chart][data-metric=train_loss] circle.point")).to_have_count(8)

    open_page(page, dep, "/sessions")
    expect(page.locator(f"tr[data-session-id='{session_id}'] [data-col=status]")).to_have_text("Finished",
                                                                                              timeout=WAIT_MS)
    screenshot(page, "sessions")


def test_overview_follows_a_running_session_and_its_page_stops_it(page: Page, deployment: Deployment,
                                                                  clients: dict[str, dict[str, Any]],
                                                                  seed_model: str) -> None:
    dep = deployment
    # from the seed again: the model trail forks (see the models test)
    session_id = dep.start_session(name="long-run", rounds=30, round_timeout=60, clients_required=2,
                                   model_id=seed_model)
    wait_until(lambda: any(r["status"] == "Finished" for r in dep.rounds(session_id)), 30, 0.2, "a finished round")
    open_page(page, dep, "/")
    expect(page.get_by_test_id("running-session")).to_contain_text("long-run", timeout=WAIT_MS)
    expect(page.get_by_test_id("current-round")).to_have_text(re.compile(r"Round \d+ of 30"), timeout=WAIT_MS)
    shown = int(re.search(r"Round (\d+)", page.get_by_test_id("current-round").inner_text()).group(1))  # type: ignore[union-attr]
    assert 1 <= shown <= len(dep.rounds(session_id))
    model_id = page.get_by_test_id("latest-model").locator("[title]").get_attribute("title")
    assert dep.get(f"/api/v1/models/{model_id}")["session_id"] == session_id  # a model this session trained
    expect(page.get_by_test_id("clients-online")).to_contain_text("2")
    screenshot(page, "overview")

    open_page(page, dep, f"/sessions/{session_id}")
    page.get_by_test_id("stop-session").click()
    expect(page.locator("h1 .badge")).to_have_text("Stopped", timeout=WAIT_MS)
    assert dep.get(f"/api/v1/sessions/{session_id}")["status"] == "Stopped"
    expect(page.get_by_test_id("stop-session")).to_have_count(0)
    rows = table_rows(page, "rounds")
    assert len(rows) < 30 and rows[-1]["data"]["status"] in ("Stopped", "Failed", "Finished")


def test_custom_command_runs_on_the_chosen_client_only(page: Page, deployment: Deployment,
                                                       clients: dict[str, dict[str, Any]]) -> None:
    dep = deployment
    wait_until(lambda: dep.get("/get_controller_status")["state"] == "idle", 30, what="no running session")
    open_page(page, dep, "/actions")
    alpha = page.locator("[data-testid=command-clients] input[data-name=alpha]")
    expect(alpha).to_be_visible(timeout=WAIT_MS)

    page.get_by_test_id("command-name").fill("echo")
    page.get_by_test_id("command-params").fill("{x: 1}")
    page.get_by_test_id("run-command").click()
    expect(page.get_by_test_id("command-status")).to_contain_text("Parameters is not valid JSON")

    page.get_by_test_id("command-params").fill('{"x": 1, "word": "hello"}')
    alpha.check()
    page.get_by_test_id("run-command").click()
    result = page.locator("[data-testid=command-result][data-status=Finished]")
    expect(result).to_be_visible(timeout=WAIT_MS)
    command_id = result.get_attribute("data-command-id")
    rest = dep.get(f"/api/v1/commands/{command_id}")
    assert rest["command_type"] == "Custom_echo" and rest["client_ids"] == [clients["alpha"]["client_id"]]

    rows = table_rows(page, "command-results")
    assert [r["data"]["clientId"] for r in rows] == [clients["alpha"]["client_id"]]
    assert rows[0]["data"]["status"] == rest["results"][0]["status"] == "COMPLETED"
    assert rows[0]["cells"]["client"] == "alpha"
    assert json.loads(rows[0]["cells"]["response"]) == rest["results"][0]["response"] == \
        {"echo": {"x": 1, "word": "hello"}, "constant": 1.0}
    expect(page.get_by_test_id("recent-commands")).to_contain_text("Custom_echo", timeout=WAIT_MS)
    screenshot(page, "actions")


def test_clients_and_model_trail_match_the_api(page: Page, deployment: Deployment,
                                              clients: dict[str, dict[str, Any]], seed_model: str) -> None:
    dep = deployment
    open_page(page, dep, "/clients")
    expect(page.locator("[data-testid=clients] tbody tr")).to_have_count(2, timeout=WAIT_MS)
    combiner = dep.get("/api/v1/combiners/")["result"][0]
    for row in table_rows(page, "clients"):
        rest = clients[row["data"]["name"]]
        assert row["data"]["clientId"] == rest["client_id"] == row["titles"]["id"]
        assert row["cells"]["status"] == "online"
        assert row["cells"]["combiner"] == combiner["name"]
        assert row["cells"]["package"] == rest["package"] == "local"
    screenshot(page, "clients")

    open_page(page, dep, "/models")
    models = dep.get("/api/v1/models/", headers={"X-Sort-Key": "committed_at"})["result"]
    nodes = page.locator("[data-testid=model-trail] li.node")
    expect(nodes).to_have_count(len(models), timeout=WAIT_MS)
    shown = {n["modelId"]: n for n in nodes.evaluate_all("ns => ns.map(n => ({...n.dataset}))")}
    assert {m["model_id"]: m["parent_model"] or "" for m in models} == {k: v["parent"] for k, v in shown.items()}
    rounds = {r["round_id"]: r["round_number"] for r in rest_list(dep, "rounds")}
    for m in models:
        assert shown[m["model_id"]]["round"] == (str(rounds[m["round_id"]]) if m["round_id"] else "")
    # two sessions started from the seed: one branch each
    branches = page.locator("[data-testid=model-trail] li.fork .branch")
    expect(branches).to_have_count(2)
    assert [b.locator("li.node").first.get_attribute("data-parent") for b in branches.all()] == [seed_model] * 2
    latest = page.locator("li.node.latest")
    expect(latest).to_have_attribute("data-model-id", models[0]["model_id"])
    href = latest.locator("a.download").get_attribute("href")
    reply = page.request.get(dep.api_url + str(href))
    assert reply.status == 200 and reply.body()[:2] == b"PK"
    screenshot(page, "models")
