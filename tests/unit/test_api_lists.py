"""The REST conventions every resource shares: lists, counts, get-by-id, error shapes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scaleout_server.store import records as r
from tests.unit.test_api_support import Api, build_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path)


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _add_models(api: Api, n: int, session_id: str | None = "s1") -> None:
    for i in range(n):
        api.store.models.add(r.ModelRecord(model_id=f"m{i}", session_id=session_id,
                                           parent_model=f"m{i - 1}" if i else None,
                                           committed_at=T0 + timedelta(seconds=i)))


def test_list_returns_count_and_newest_first_by_default(api: Api) -> None:
    _add_models(api, 3)
    body = api.client.get("/api/v1/models/").json()
    assert body["count"] == 3
    assert [m["model_id"] for m in body["result"]] == ["m2", "m1", "m0"]


def test_list_limit_skip_and_ascending_sort_from_headers(api: Api) -> None:
    _add_models(api, 5)
    res = api.client.get("/api/v1/models/", headers={"X-Limit": "2", "X-Skip": "1", "X-Sort-Key": "committed_at",
                                                     "X-Sort-Order": "asc"})
    assert res.status_code == 200
    body = res.json()
    assert body["count"] == 5  # total matches, ignoring the page
    assert [m["model_id"] for m in body["result"]] == ["m1", "m2"]


def test_list_limit_zero_means_all(api: Api) -> None:
    _add_models(api, 4)
    assert len(api.client.get("/api/v1/models/", headers={"X-Limit": "0"}).json()["result"]) == 4


def test_list_filters_by_query_string_and_count_is_a_bare_integer(api: Api) -> None:
    _add_models(api, 2, session_id="s1")
    api.store.models.add(r.ModelRecord(model_id="other", session_id="s2"))
    body = api.client.get("/api/v1/models/", params={"session_id": "s2"}).json()
    assert [m["model_id"] for m in body["result"]] == ["other"]
    assert api.client.get("/api/v1/models/count", params={"session_id": "s1"}).json() == 2
    assert api.client.get("/api/v1/models/count").json() == 3


def test_collection_root_works_without_trailing_slash(api: Api) -> None:
    _add_models(api, 1)
    res = api.client.get("/api/v1/models", follow_redirects=False)
    assert res.status_code == 200
    assert res.json()["count"] == 1


def test_models_carry_the_legacy_model_key(api: Api) -> None:
    _add_models(api, 1)
    assert api.client.get("/api/v1/models/m0").json()["model"] == "m0"


def test_clients_carry_combiner_alias_and_filter_by_it(api: Api) -> None:
    api.store.clients.add(r.ClientRecord(client_id="c1", name="one", combiner_id="comb-a", status="online"))
    api.store.clients.add(r.ClientRecord(client_id="c2", name="two", combiner_id="comb-b", status="offline"))
    body = api.client.get("/api/v1/clients/", params={"status": "online", "combiner": "comb-a"}).json()
    assert [c["client_id"] for c in body["result"]] == ["c1"]
    assert body["result"][0]["combiner"] == "comb-a"
    assert api.client.get("/api/v1/clients/count", params={"status": "online"}).json() == 1


def test_rounds_filter_by_round_config_session_id_and_show_it(api: Api) -> None:
    api.store.rounds.add(r.RoundRecord(round_id="r1", session_id="s1", round_number=1, status="Finished"))
    api.store.rounds.add(r.RoundRecord(round_id="r2", session_id="s2", round_number=1, status="Finished"))
    body = api.client.get("/api/v1/rounds/", params={"round_config.session_id": "s1"}).json()
    assert [x["round_id"] for x in body["result"]] == ["r1"]
    assert body["result"][0]["round_config"]["session_id"] == "s1"


def test_statuses_filter_on_sender_fields(api: Api) -> None:
    for i, name in enumerate(["alpha", "beta"]):
        api.store.statuses.add(r.StatusRecord(status_id=f"st{i}", status="hello", sender=r.Sender(name=name)))
    body = api.client.get("/api/v1/statuses/", params={"sender.name": "beta"}).json()
    assert [s["status_id"] for s in body["result"]] == ["st1"]
    assert body["result"][0]["sender"]["name"] == "beta"


def test_every_resource_answers_list_and_count(api: Api) -> None:
    for name in ("clients", "combiners", "models", "packages", "sessions", "rounds", "validations", "metrics",
                 "statuses", "predictions", "commands", "updates", "telemetry", "attributes"):
        assert api.client.get(f"/api/v1/{name}/").json() == {"count": 0, "result": []}, name
        assert api.client.get(f"/api/v1/{name}/count").json() == 0, name


def test_unknown_id_is_404_with_message(api: Api) -> None:
    res = api.client.get("/api/v1/sessions/does-not-exist")
    assert res.status_code == 404
    assert res.json()["message"] == "Session with id: does-not-exist not found"


def test_unknown_filter_is_400_naming_valid_fields(api: Api) -> None:
    res = api.client.get("/api/v1/models/", params={"colour": "red"})
    assert res.status_code == 400
    assert "colour" in res.json()["message"] and "session_id" in res.json()["message"]


def test_bad_limit_header_is_400(api: Api) -> None:
    res = api.client.get("/api/v1/models/", headers={"X-Limit": "many"})
    assert res.status_code == 400
    assert "X-Limit" in res.json()["message"]


@pytest.mark.parametrize(("path", "header"), [("/api/v1/models/", "X-Limit"), ("/api/v1/models/", "X-Skip"),
                                            ("/api/v1/models/m/ancestors", "X-Limit")])
def test_out_of_range_count_header_is_400_not_a_database_overflow(api: Api, path: str, header: str) -> None:
    res = api.client.get(path, headers={header: str(2**64)})
    assert res.status_code == 400
    assert header in res.json()["message"] and "from 0 to" in res.json()["message"]
    assert api.client.get(path, headers={header: "-1"}).status_code == 400


def test_bad_sort_order_is_400(api: Api) -> None:
    res = api.client.get("/api/v1/models/", headers={"X-Sort-Order": "sideways"})
    assert res.status_code == 400
    assert "asc or desc" in res.json()["message"]


def test_validation_error_becomes_400_with_field_path(api: Api) -> None:
    res = api.client.post("/api/v1/sessions/start", json={"rounds": "three"})
    assert res.status_code == 400
    message = res.json()["message"]
    assert "session_id: Field required" in message
    assert "rounds:" in message


def test_invalid_json_body_is_400(api: Api) -> None:
    res = api.client.post("/api/v1/sessions/start", content=b"{not json", headers={"Content-Type": "application/json"})
    assert res.status_code == 400
    assert "valid JSON" in res.json()["message"]


def test_unknown_route_is_json_404(api: Api) -> None:
    res = api.client.get("/api/v1/nothing-here")
    assert res.status_code == 404
    assert "/docs" in res.json()["message"]


def test_unexpected_error_is_logged_500_and_server_keeps_answering(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("kaput")

    api.client.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    res = api.client.get("/boom")
    assert res.status_code == 500
    assert res.json() == {"message": "An unexpected error occurred"}
    assert api.client.get("/health").text == "OK"


def test_declared_body_over_limit_is_413(api: Api) -> None:
    limit = api.controller.settings.max_upload_bytes
    res = api.client.post("/api/v1/sessions/start", content=b"x", headers={"Content-Length": str(limit + 1)})
    assert res.status_code == 413
    assert "max_upload_bytes" in res.json()["message"]


def test_openapi_and_docs_are_served(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "/api/v1/clients/add" in spec["paths"]
    assert api.client.get("/docs").status_code == 200


def test_token_endpoints_echo_the_token_while_auth_is_off(api: Api) -> None:
    for path in ("/api/auth/refresh", "/api/v1/clients/token"):
        res = api.client.post(path, json={"refresh_token": "abc", "role": "client"})
        assert res.status_code == 200
        assert res.json() == {"access_token": "abc", "expires_in": 3600}


def test_bearer_none_is_accepted(api: Api) -> None:
    res = api.client.get("/api/v1/clients/", headers={"Authorization": "Bearer None"})
    assert res.status_code == 200


def test_active_helper_defaults_to_numpyhelper_and_can_be_set(api: Api) -> None:
    assert api.client.get("/api/v1/helpers/active").json() == "numpyhelper"
    assert api.client.put("/api/v1/helpers/active", json={"helper": "binaryhelper"}).status_code == 200
    assert api.client.get("/api/v1/helpers/active").json() == "binaryhelper"


def test_unknown_helper_is_400_listing_the_known_ones(api: Api) -> None:
    res = api.client.put("/api/v1/helpers/active", json={"helper": "pytorchhelper"})
    assert res.status_code == 400
    assert "numpyhelper" in res.json()["message"]


def test_combiner_public_hostname_patch(api: Api) -> None:
    api.store.combiners.add(r.CombinerRecord(combiner_id="cb", name="combiner", host="10.0.0.5", port=12080))
    res = api.client.patch("/api/v1/combiners/cb", json={"public_hostname": "edge.example.org"})
    assert res.status_code == 200
    assert api.store.combiners.require("cb").public_hostname == "edge.example.org"
    bad = api.client.patch("/api/v1/combiners/cb", json={"public_hostname": "https://edge.example.org"})
    assert bad.status_code == 400
    assert api.client.patch("/api/v1/combiners/nope", json={"public_hostname": "x"}).status_code == 404


def test_current_attributes_per_client(api: Api) -> None:
    api.store.clients.add(r.ClientRecord(client_id="c1", name="one", attributes={"gpu": "yes"}))
    res = api.client.post("/api/v1/attributes/current", json={"node_ids": ["c1", "ghost"]})
    assert res.json() == {"c1": {"gpu": "yes"}, "ghost": {}}
    assert api.client.post("/api/v1/attributes/current", json={"client_ids": "c1"}).json() == {"c1": {"gpu": "yes"}}
    assert api.client.post("/api/v1/attributes/current", json={}).status_code == 400


def test_delete_client(api: Api) -> None:
    api.store.clients.add(r.ClientRecord(client_id="c1", name="one"))
    assert api.client.delete("/api/v1/clients/c1").status_code == 200
    assert api.client.get("/api/v1/clients/c1").status_code == 404
    assert api.client.delete("/api/v1/clients/c1").status_code == 404


def test_control_continue_explains_the_alternative(api: Api) -> None:
    res = api.client.post("/api/v1/control/continue")  # nothing running to skip
    assert res.status_code == 409
    assert "sessions/start" in res.json()["message"]


def test_fixed_paths_win_over_ids(api: Api) -> None:
    config = api.client.get("/api/v1/clients/config", params={"checksum": "true"})
    assert config.status_code == 200
    assert config.json()["discover_host"].startswith("http") and config.json()["checksum"] is None
    api.store.commands.add(r.CommandRecord(command_id="cmd1", command_type="Custom_x"))
    assert [c["command_id"] for c in api.client.get("/api/v1/commands/roots").json()["result"]] == ["cmd1"]
