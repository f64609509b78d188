"""Inspecting the controller's records (clients, combiners, rounds, validations, statuses, metrics,
predictions, commands) and the ad-hoc tasks that produce some of them (predictions, custom commands,
validations of a chosen model).
"""

from __future__ import annotations

import uuid
from typing import Any

import click

from scaleout.cli.api_options import (
    Api,
    ApiError,
    api_options,
    id_option,
    list_options,
    output_option,
    parse_id_list,
    parse_json_object,
)
from scaleout.cli.groups import (
    client_group,
    combiner_group,
    command_group,
    metric_group,
    prediction_group,
    round_group,
    status_group,
    validation_group,
)
from scaleout.cli.output import console, dump, results_table, show_list, show_object, status_text
from scaleoututil.protocol import custom_task_type

NEWEST_FIRST = {"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"}
CALL_MARGIN = 30.0  # seconds a synchronous task call may take beyond the task timeout


def _add_get(group: click.Group, kind: str, label: str) -> None:
    """`<group> get -id ID`: GET /api/v1/<kind>/<id>."""

    @group.command("get", help=f"Show one {label.lower()}.")
    @api_options
    @id_option(label)
    @output_option
    def get(api: Api, id_: str, output: str) -> None:
        show_object(kind, api.call("GET", f"{kind}/{id_}"), output)


# -- clients and combiners ----------------------------------------------------------------------------------
@client_group.command("list")
@api_options
@list_options
@click.option("--online", is_flag=True, help="Only clients connected now")
@click.option("--combiner", "combiner_id", default=None, help="Only clients of this combiner (id)")
def client_list(api: Api, output: str, n_max: int | None, online: bool, combiner_id: str | None) -> None:
    """List clients."""
    params = {"status": "online" if online else None, "combiner_id": combiner_id}
    show_list("clients", api.list("clients/", params=params, n_max=n_max), output, api.base_url)


_add_get(client_group, "clients", "Client")


@combiner_group.command("list")
@api_options
@list_options
def combiner_list(api: Api, output: str, n_max: int | None) -> None:
    """List combiners."""
    show_list("combiners", api.list("combiners/", n_max=n_max), output, api.base_url)


_add_get(combiner_group, "combiners", "Combiner")


@combiner_group.command("set-public-hostname")
@api_options
@click.argument("public_hostname")
@click.option("-id", "--id", "id_", required=True, help="Combiner ID")
def combiner_set_public_hostname(api: Api, public_hostname: str, id_: str) -> None:
    """Set the host name edge clients dial for a combiner (e.g. a load balancer's name)."""
    combiner = api.call("PATCH", f"combiners/{id_}", json={"public_hostname": public_hostname})
    name = combiner.get("name", id_) if isinstance(combiner, dict) else id_
    click.echo(f"Combiner {name}: clients now connect to {public_hostname}.")


# -- rounds, validations, statuses, metrics -----------------------------------------------------------------
@round_group.command("list")
@api_options
@list_options
@click.option("-s", "--session_id", "session_id", default=None, help="Rounds in session with given session id")
def round_list(api: Api, output: str, n_max: int | None, session_id: str | None) -> None:
    """List rounds, newest first."""
    body = api.list("rounds/", params={"session_id": session_id}, n_max=n_max, headers=NEWEST_FIRST)
    show_list("rounds", body, output, api.base_url)


_add_get(round_group, "rounds", "Round")


@validation_group.command("list")
@api_options
@list_options
@click.option("-s", "--session_id", "session_id", default=None, help="Validations in session with given session id")
@click.option("--model-id", "model_id", default=None, help="Validations of this model")
def validation_list(api: Api, output: str, n_max: int | None, session_id: str | None, model_id: str | None) -> None:
    """List validation results, newest first."""
    body = api.list("validations/", params={"session_id": session_id, "model_id": model_id}, n_max=n_max,
                    headers=NEWEST_FIRST)
    show_list("validations", body, output, api.base_url)


_add_get(validation_group, "validations", "Validation")


@validation_group.command("start")
@api_options
@click.option("--model-id", "model_id", required=True, help="Model ID")
@click.option("--session-id", "session_id", default=None, help="Session the results are filed under")
@click.option("--client-ids", "client_ids", default=None, help="Comma-separated client ids [default: all online]")
@click.option("--timeout", type=click.FloatRange(min=1), default=180, show_default=True,
              help="Seconds the clients get to validate")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return at once instead of waiting for the results")
def validation_start(api: Api, model_id: str, session_id: str | None, client_ids: str | None, timeout: float,
                     no_wait: bool) -> None:
    """Ask clients to validate a model."""
    body = {"session_id": session_id, "model_id": model_id, "client_ids": parse_id_list(client_ids),
            "timeout": timeout, "synchronous": not no_wait}
    reply = api.call("POST", "validations/start", json=body, timeout=CALL_MARGIN + (0 if no_wait else timeout))
    _report_task(reply, "Validation", no_wait)
    if not no_wait:
        found = api.list("validations/", params={"model_id": model_id}, headers=NEWEST_FIRST)
        if found["result"]:
            show_list("validations", found)


@status_group.command("list")
@api_options
@list_options
@click.option("-s", "--session_id", "session_id", default=None, help="Statuses with given session id")
def status_list(api: Api, output: str, n_max: int | None, session_id: str | None) -> None:
    """List status messages, newest first."""
    body = api.list("statuses/", params={"session_id": session_id}, n_max=n_max,
                    headers={"X-Sort-Key": "timestamp", "X-Sort-Order": "desc"})
    show_list("statuses", body, output, api.base_url)


_add_get(status_group, "statuses", "Status")


@metric_group.command("list")
@api_options
@list_options
@click.option("-s", "--session_id", "session_id", default=None, help="Metrics of this session")
@click.option("--key", default=None, help="Only this metric (e.g. training_loss)")
@click.option("--client", "client_name", default=None, help="Only metrics sent by the client with this name")
@click.option("--client-id", "client_id", default=None, help="Only metrics sent by the client with this id")
def metric_list(api: Api, output: str, n_max: int | None, session_id: str | None, key: str | None,
                client_name: str | None, client_id: str | None) -> None:
    """List metrics that clients logged with log_metric, newest first."""
    params = {"session_id": session_id, "key": key, "sender.name": client_name, "sender.client_id": client_id}
    body = api.list("metrics/", params=params, n_max=n_max, headers={"X-Sort-Key": "timestamp", "X-Sort-Order": "desc"})
    show_list("metrics", body, output, api.base_url)


# -- ad-hoc tasks: predictions and custom commands ----------------------------------------------------------
def _report_task(reply: Any, label: str, no_wait: bool) -> None:
    """Print a task reply `{command_id, status, results: [...]}`; exit 1 when a client's task failed."""
    if not isinstance(reply, dict):
        click.echo(str(reply))
        return
    out = console()
    line = f"{label} {reply.get('command_id') or ''}".strip() + ": "
    out.print(line, status_text(reply.get("status")), sep="")
    results = reply.get("results") or []
    if results:
        out.print(results_table(results))
    elif not no_wait:
        out.print("No client answered (are any clients online? see `scaleout client list --online`).")
    failed = [r for r in results if str(r.get("status", "")).upper() in ("FAILED", "TIMEOUT", "INTERRUPTED")]
    if failed:
        names = ", ".join(str(r.get("client_name") or r.get("client_id")) for r in failed)
        raise ApiError(f"{label} did not succeed on {len(failed)} of {len(results)} client(s): {names}")


@prediction_group.command("start")
@api_options
@click.option("--model-id", "model_id", default=None, help="Model to predict with [default: the newest]")
@click.option("--client-ids", "client_ids", default=None, help="Comma-separated client ids [default: all online]")
@click.option("--params", "params", default=None, help="Parameters for the clients' predict callback, as JSON")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds the clients get to predict")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return at once instead of waiting for the results")
@click.option("--prediction-id", "prediction_id", default=None, help="Id to file the results under [default: new]")
def prediction_start(api: Api, model_id: str | None, client_ids: str | None, params: str | None, timeout: float,
                     no_wait: bool, prediction_id: str | None) -> None:
    """Run the clients' predict callback on a model and show what they returned."""
    parameters = parse_json_object(params, "'--params'")
    prediction_id = prediction_id or str(uuid.uuid4())
    body = {"prediction_id": prediction_id, "model_id": model_id, "client_ids": parse_id_list(client_ids),
            "parameters": parameters, "timeout": timeout, "synchronous": not no_wait}
    reply = api.call("POST", "predictions/start", json=body, timeout=CALL_MARGIN + (0 if no_wait else timeout))
    click.echo(f"Prediction {prediction_id}")
    try:
        _report_task(reply, "Prediction task", no_wait)
    finally:
        if not no_wait:
            found = api.list("predictions/", params={"prediction_id": prediction_id})
            if found["result"]:
                show_list("predictions", found)
    if no_wait:
        click.echo(f"See the results with `scaleout prediction list --prediction-id {prediction_id}`.")


@prediction_group.command("list")
@api_options
@list_options
@click.option("--prediction-id", "prediction_id", default=None, help="Only the results of this prediction run")
@click.option("--model-id", "model_id", default=None, help="Only predictions made with this model")
def prediction_list(api: Api, output: str, n_max: int | None, prediction_id: str | None, model_id: str | None) -> None:
    """List prediction results, newest first."""
    body = api.list("predictions/", params={"prediction_id": prediction_id, "model_id": model_id}, n_max=n_max,
                    headers={"X-Sort-Key": "timestamp", "X-Sort-Order": "desc"})
    show_list("predictions", body, output, api.base_url)


@command_group.command("run")
@api_options
@click.argument("name")
@click.option("--params", "params", default=None, help="Parameters for the command's callback, as a JSON object")
@click.option("--client-ids", "client_ids", default=None, help="Comma-separated client ids [default: all online]")
@click.option("--timeout", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds the clients get to answer")
@click.option("--no-wait", "no_wait", is_flag=True, help="Return at once instead of waiting for the answers")
@output_option
def command_run(api: Api, name: str, params: str | None, client_ids: str | None, timeout: float, no_wait: bool,
                output: str) -> None:
    """Run the custom command NAME (a callback registered with set_custom_callback) on clients."""
    body = {"command_type": custom_task_type(name), "parameters": parse_json_object(params, "'--params'"),
            "client_ids": parse_id_list(client_ids), "timeout": timeout, "synchronous": not no_wait}
    reply = api.call("POST", "control/run_command", json=body, timeout=CALL_MARGIN + (0 if no_wait else timeout))
    if output != "human":
        dump(reply, output)
        return
    _report_task(reply, f"Command {custom_task_type(name)}", no_wait)
    if no_wait and isinstance(reply, dict) and reply.get("command_id"):
        click.echo(f"See the answers with `scaleout command get -id {reply['command_id']}`.")


@command_group.command("list")
@api_options
@list_options
def command_list(api: Api, output: str, n_max: int | None) -> None:
    """List custom commands sent to clients, newest first."""
    show_list("commands", api.list("commands/", n_max=n_max, headers=NEWEST_FIRST), output, api.base_url)


_add_get(command_group, "commands", "Command")
