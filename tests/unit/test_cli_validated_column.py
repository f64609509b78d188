"""The CLI's round tables say how many clients validated (round_data.validation): `session start --wait`
and `round list`, against a fake controller answering with real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from scaleout.cli.output import validation_cell
from tests.unit.test_api_client_support import FakeController
from tests.unit.test_cli_session import _round, _session_sequence, _validation, fake, run, start_routes  # noqa: F401

pytestmark = pytest.mark.timeout(30)


def _validated(number: int, validation: dict[str, Any] | None) -> dict[str, Any]:
    round_ = _round(number)
    if validation is not None:
        round_["round_data"]["validation"] = validation
    return round_


@pytest.mark.parametrize(("validation", "cell"), [
    ({"clients": 2, "completed": 2, "validated": 2, "skipped": [], "errors": []}, "2/2"),
    ({"clients": 2, "completed": 2, "validated": 1, "skipped": ["a", "b"], "errors": []}, "1/2 (2 skipped)"),
    ({"clients": 3, "completed": 2, "errors": ["x: FAILED"]}, "2/3"),  # a round stored before `validated`
    (None, ""),
])
def test_validation_cell(validation: dict[str, Any] | None, cell: str) -> None:
    assert validation_cell(_validated(1, validation)) == cell


def test_wait_table_has_a_validated_column_only_when_rounds_validated(fake: FakeController) -> None:  # noqa: F811
    start_routes(fake)
    _session_sequence(fake, ["Running", "Finished"])
    fake.on("GET", "/api/v1/rounds/", body={"count": 2, "result": [
        _validated(1, {"clients": 1, "completed": 1, "validated": 1, "skipped": ["edge-7"], "errors": []}),
        _validated(2, {"clients": 2, "completed": 2, "validated": 2, "skipped": [], "errors": []})]})
    fake.on("GET", "/api/v1/validations/", body={"count": 1, "result": [_validation("r1", "m1", acc=0.5)]})

    result = run(fake, "session", "start", "-r", "2", "--wait")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = [c.strip() for c in next(line for line in lines if "Round" in line and "Clients" in line).split("┃")]
    assert header[1:6] == ["Round", "Status", "Clients", "Validated", "Duration"]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert [row[3] for row in rows] == ["1/1 (1 skipped)", "2/2"]


def test_round_list_shows_validated_after_updates(fake: FakeController) -> None:  # noqa: F811
    fake.on("GET", "/api/v1/rounds/", body={"count": 2, "result": [
        _validated(2, {"clients": 2, "completed": 2, "validated": 1, "skipped": [], "errors": []}),
        _validated(1, None)]})
    result = run(fake, "round", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = [c.strip() for c in next(line for line in lines if "Validated" in line).split("┃")]
    at = header.index("Validated")
    assert header[at - 1] == "Updates"
    rows = [[c.strip() for c in line.split("│")] for line in lines if line.startswith("│")]
    assert [row[at] for row in rows] == ["1/2", ""]
