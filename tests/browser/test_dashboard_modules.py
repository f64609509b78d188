"""The dashboard's JavaScript modules, run in Chromium on hand-made records: the rules that are hard
to reach with a real deployment (forked model trails, metrics without steps, clients sharing a
name, the Authorization header, the start-session request matching the CLI's).

The page's origin is served from scaleout_server/ui/static by Playwright's request routing, so no
server is needed; the API answers are the few fixed replies each test names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Page, Route

from scaleout_server.ui import STATIC_DIR
from scaleoututil.api.client import session_config

pytestmark = pytest.mark.timeout(60)

ORIGIN = "http://dashboard.test"


@dataclass
class Sandbox:
    page: Page
    replies: dict[str, tuple[int, Any]] = field(default_factory=dict)  # API path -> (status, JSON body)
    seen: list[dict[str, Any]] = field(default_factory=list)  # API requests: path and headers


@pytest.fixture
def js(page: Page) -> Sandbox:
    """A blank page on ORIGIN whose /ui/static/ files come from the package; /api/ paths answer what
    `replies` holds, else 404."""
    box = Sandbox(page)

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?", 1)[0]
        if path.startswith("/ui/static/"):
            file = STATIC_DIR / path.removeprefix("/ui/static/")
            route.fulfill(status=200, body=file.read_bytes(), content_type="text/javascript")
        elif path.startswith("/api/"):
            box.seen.append({"path": path, "headers": route.request.headers})
            status, body = box.replies.get(path, (404, {"message": f"no route {path}"}))
            route.fulfill(status=status, body=json.dumps(body), content_type="application/json")
        else:
            route.fulfill(status=200, body="<!doctype html><title>t</title>", content_type="text/html")

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/blank")
    return box


def run(box: Sandbox, module: str, body: str, arg: Any = None) -> Any:
    """Evaluate `body` (a function body using `m`, the imported module, and `arg`) in the page."""
    return box.page.evaluate(f"async (arg) => {{ const m = await import('/ui/static/{module}'); {body} }}", arg)


def test_model_lineage_forks_where_two_sessions_start_from_one_model(js: Sandbox) -> None:
    models = [
        {"model_id": "seed", "parent_model": None, "committed_at": "2026-01-01T00:00:00Z"},
        {"model_id": "a1", "parent_model": "seed", "committed_at": "2026-01-01T00:01:00Z"},
        {"model_id": "b1", "parent_model": "seed", "committed_at": "2026-01-01T00:02:00Z"},
        {"model_id": "a2", "parent_model": "a1", "committed_at": "2026-01-01T00:03:00Z"},
        {"model_id": "orphan", "parent_model": "deleted", "committed_at": "2026-01-01T00:04:00Z"},
    ]
    tree = run(js, "page_models.js", """const t = m.lineage(arg);
        return {roots: t.roots.map(x => x.model_id),
                children: Object.fromEntries([...t.children].map(([k, v]) => [k, v.map(x => x.model_id)]))};""",
               list(reversed(models)))
    assert tree == {"roots": ["seed", "orphan"], "children": {"seed": ["a1", "b1"], "a1": ["a2"]}}


def test_training_metrics_lay_rounds_end_to_end_and_number_missing_steps(js: Sandbox) -> None:
    rounds = [{"round_id": "r1", "round_number": 1}, {"round_id": "r2", "round_number": 2}]

    def metric(client: str, round_id: str, step: int | None, value: float, t: int) -> dict[str, Any]:
        return {"metric_id": f"{client}{round_id}{t}", "key": "loss", "value": value, "step": step,
                "round_id": round_id, "sender": {"client_id": f"id-{client}", "name": client},
                "timestamp": f"2026-01-01T00:00:{t:02d}Z"}

    metrics = [metric("a", "r1", 0, 1.0, 1), metric("a", "r1", 1, 0.5, 2), metric("a", "r1", 2, 0.25, 3),
               metric("a", "r2", 0, 0.9, 4), metric("a", "r2", 1, 0.4, 5),
               metric("b", "r2", None, 0.8, 6), metric("b", "r2", None, 0.7, 7)]
    series = run(js, "rounds.js", "return m.trainingSeries(arg.metrics, arg.rounds);",
                 {"metrics": metrics, "rounds": rounds})
    assert len(series) == 1 and series[0]["key"] == "loss"
    points = {c["label"]: [(p["x"], p["y"], p["data"]["step"], p["data"]["round"]) for p in c["points"]]
              for c in series[0]["clients"]}
    # round 2 starts after round 1's three steps; b's values without a step count 0, 1
    assert points["a"] == [(0, 1.0, 0, 1), (1, 0.5, 1, 1), (2, 0.25, 2, 1), (3, 0.9, 0, 2), (4, 0.4, 1, 2)]
    assert points["b"] == [(3, 0.8, 0, 2), (4, 0.7, 1, 2)]
    assert [m["label"] for m in series[0]["markers"]] == ["R1", "R2"]

    only = run(js, "rounds.js", "return m.trainingSeries(arg.metrics, arg.rounds, 2);",
               {"metrics": metrics, "rounds": rounds})
    assert [(p["x"], p["y"]) for p in only[0]["clients"][0]["points"]] == [(0, 0.9), (1, 0.4)]
    assert only[0]["markers"] == []


def test_validations_find_their_round_by_model_and_same_named_clients_stay_apart(js: Sandbox) -> None:
    rounds = [{"round_id": "r1", "round_number": 1, "new_model_id": "m1"},
              {"round_id": "r2", "round_number": 2, "new_model_id": "m2"}]
    validations = [
        {"round_id": "r1", "model_id": "m1", "data": {"acc": 0.5, "note": "x"},
         "sender": {"client_id": "c1", "name": "site"}},
        {"round_id": None, "model_id": "m2", "data": {"acc": 0.7}, "sender": {"client_id": "c1", "name": "site"}},
        {"round_id": "r2", "model_id": "m2", "data": {"acc": 0.9}, "sender": {"client_id": "c2", "name": "site"}},
        {"round_id": None, "model_id": "elsewhere", "data": {"acc": 0.1}, "sender": {"client_id": "c3", "name": "x"}},
    ]
    series = run(js, "rounds.js", "return m.validationSeries(arg.rounds, arg.validations);",
                 {"rounds": rounds, "validations": validations})
    assert [s["key"] for s in series] == ["acc"]  # "note" is not a number
    clients = {c["label"]: [(p["x"], p["y"]) for p in c["points"]] for c in series[0]["clients"]}
    assert clients == {"site (c1)": [(1, 0.5), (2, 0.7)], "site (c2)": [(2, 0.9)]}
    assert [(p["x"], p["y"]) for p in series[0]["mean"]] == [(1, 0.5), (2, pytest.approx(0.8))]


def test_round_counts_sum_the_combiners(js: Sandbox) -> None:
    round_ = {"status": "Finished", "round_data": {"clients_selected": 9, "duration": 2.5},
              "combiners": [{"clients": 2, "updates_received": 2, "updates_expected": 2},
                            {"clients": 3, "updates_received": 1, "updates_expected": 3}]}
    got = run(js, "rounds.js", "return [m.roundCounts(arg), m.roundDuration(arg)];", round_)
    assert got == [{"asked": 5, "answered": 3, "expected": 5}, 2.5]


def test_validated_cell_says_as_the_cli_does_how_many_validated_and_who_was_skipped(js: Sandbox) -> None:
    from scaleout.cli.output import validation_cell

    rounds = [{"round_data": {"validation": {"clients": 3, "completed": 3, "validated": 2, "skipped": ["c9"]}}},
              {"round_data": {"validation": {"clients": 2, "completed": 2}}},
              {"round_data": {}}, {}]
    got = [run(js, "rounds.js", "return m.validatedCell(arg);", r) for r in rounds]
    assert got == ["2/3 (1 skipped)", "2/2", "", ""]
    assert got == [validation_cell(r) for r in rounds]


def test_start_form_sends_the_cli_session_config_and_explains_bad_values(js: Sandbox) -> None:
    form = {"name": " demo ", "aggregator": "fedavg", "aggregator_kwargs": '{"lr": 0.1}', "model_id": "m1",
            "rounds": "3", "round_timeout": "60", "round_buffer_size": "-1", "min_clients": "2",
            "requested_clients": "4", "helper": "", "validate": True, "delete_models": False}
    request = run(js, "page_actions.js", "return m.sessionRequest(arg);", form)
    cli = session_config(aggregator="fedavg", aggregator_kwargs={"lr": 0.1}, rounds=3, round_timeout=60,
                         buffer_size=-1, model_id="m1", delete_models=False, min_clients=2, requested_clients=4,
                         validate=True, helper="numpyhelper")
    assert request["body"]["session_config"] == {**cli, "helper_type": None}  # None: the server's active helper
    assert request["body"]["name"] == "demo" and request["body"]["seed_model_id"] == "m1"
    assert (request["rounds"], request["roundTimeout"]) == (3, 60)

    bad = run(js, "page_actions.js", "return m.sessionRequest(arg);",
              {**form, "rounds": "2.5", "round_timeout": "0", "round_buffer_size": "0", "aggregator": " ",
               "aggregator_kwargs": "{oops", "requested_clients": "many"})
    assert set(bad["errors"]) == {"rounds", "round_timeout", "round_buffer_size", "aggregator", "aggregator_kwargs",
                                  "requested_clients"}
    assert bad["errors"]["rounds"] == "Rounds must be a whole number ≥ 1, got “2.5”."
    assert bad["errors"]["round_buffer_size"] == "Round buffer size must be -1 or a whole number ≥ 1, got 0."
    assert bad["errors"]["aggregator_kwargs"].startswith("Aggregator kwargs is not valid JSON")


def test_api_requests_carry_a_stored_token_and_surface_server_messages(js: Sandbox) -> None:
    js.replies["/api/v1/sessions/"] = (409, {"message": "session s1 is running; stop it first"})
    js.replies["/api/v1/clients/count"] = (200, 2)
    got = run(js, "api.js", """
        const out = {};
        out.count = await m.api.count("clients", {status: "online"});
        m.setToken("Bearer secret-1");
        await m.api.count("clients");
        try { await m.api.post("sessions/", {}); } catch (e) { out.error = [e.name, e.status, e.message]; }
        m.setToken("");
        await m.api.count("clients");
        return out;""")
    assert got == {"count": 2, "error": ["ApiError", 409, "session s1 is running; stop it first"]}
    auth = [seen["headers"].get("authorization") for seen in js.seen]
    assert auth == [None, "Bearer secret-1", "Bearer secret-1", None]


def test_stop_session_asks_first_and_returns_the_server_message(js: Sandbox) -> None:
    js.replies["/api/v1/sessions/s1/stop"] = (200, {"message": "Session s1 stopped"})
    got = run(js, "api.js", """
        const asked = [];
        window.confirm = (q) => { asked.push(q); return asked.length > 1; };
        const declined = m.stopSession({session_id: "s1", name: "demo"});
        const message = await m.stopSession({session_id: "s1", name: "demo"});
        return {declined, message, asked};""")
    assert got == {"declined": None, "message": "Session s1 stopped",
                   "asked": ["Stop session demo? Running training tasks are aborted."] * 2}
    assert [seen["path"] for seen in js.seen] == ["/api/v1/sessions/s1/stop"]


def test_chart_points_carry_their_values_and_ticks_are_round_numbers(js: Sandbox) -> None:
    got = run(js, "chart.js", """
        const fig = m.lineChart({title: "acc", metric: "acc", testid: "c", integerX: true,
          series: [{name: "a", color: "#000", points: [{x: 1, y: 0.51}, {x: 2, y: 0.515}]},
                   {name: "mean", color: "#111", dashed: true, points: [{x: 1, y: 0.5125, data: {n: 2}}]}]});
        document.body.append(fig);
        return {points: [...fig.querySelectorAll("circle.point")].map(c => ({...c.dataset})),
                legend: [...fig.querySelectorAll(".legend .key")].map(k => k.textContent),
                ticks: m.ticks(0.2, 1.0, 5), empty: m.lineChart({title: "x", series: []}).textContent};""")
    assert got["points"] == [{"series": "a", "x": "1", "y": "0.51"}, {"series": "a", "x": "2", "y": "0.515"},
                             {"series": "mean", "x": "1", "y": "0.5125", "n": "2"}]
    assert got["legend"] == ["a", "mean"]
    assert got["ticks"] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert "No values yet" in got["empty"]
