"""Staging models on clients and on-device inference (`scaleout model stage`, `scaleout inference start|list`),
and ending a running command (`scaleout command stop|skip`). The published CLI has none of these; they
call the routes its APIClient uses (`models/{id}/stage`, `control/start_inference`, `commands/{id}/...`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from scaleout.cli.api_options import (
    Api,
    ApiError,
    api_options,
    list_options,
    output_option,
    parse_id_list,
    parse_json_object,
)
from scaleout.cli.groups import command_group, inference_group, model_group
from scaleout.cli.output import console, dump, results_table, show_list

F = TypeVar("F", bound=Callable[..., Any])

CALL_MARGIN = 30.0  # seconds a synchronous call may take beyond the task timeout
NOT_DONE = ("FAILED", "TIMEOUT", "INTERRUPTED")

def _wait_options(default_timeout: float) -> Callable[[F], F]:
    """`--client-ids`, `--timeout` and `--no-wait`, as `scaleout command run` takes them."""

    def decorate(func: F) -> F:
        func = click.option("--no-wait", "no_wait", is_flag=True,
                            help="Return at once instead of waiting for the clients")(func)
        func = click.option("--timeout", type=click.FloatRange(min=1), default=default_timeout, show_default=True,
                            help="Seconds the clients get")(func)
        return click.option("--client-ids", "client_ids", default=None,
                            help="Comma-separated client ids [default: all online]")(func)

    return decorate


def _report(reply: dict[str, Any], what: str, no_wait: bool, output: str) -> None:
    """Print a command reply; exit 1 when a client did not complete (so scripts can rely on `$?`)."""
    if output != "human":
        dump(reply, output)
        return
    out = console()
    out.print(f"{what}: command {reply.get('command_id')} ({reply.get('status')})")
    if no_wait:
        out.print(f"See how it went with `scaleout command get -id {reply.get('command_id')}`.")
        return
    results = reply.get("results") or []
    if results:
        out.print(results_table(results))
    failed = [r for r in results if str(r.get("status", "")).upper() in NOT_DONE]
    if failed:
        names = ", ".join(str(r.get("client_name") or r.get("client_id")) for r in failed)
        raise ApiError(f"{what} did not succeed on {len(failed)} of {len(results)} client(s): {names}")


@model_group.command("stage")
@api_options
@click.option("-id", "--id", "id_", required=True, help="Model ID")
@_wait_options(120.0)
@output_option
def model_stage(api: Api, id_: str, client_ids: str | None, timeout: float, no_wait: bool, output: str) -> None:
    """Have clients download a model into their local cache and run their stage callback, ready for inference."""
    body = {"client_ids": parse_id_list(client_ids), "timeout": timeout, "synchronous": not no_wait}
    reply = api.call("POST", f"models/{id_}/stage", json=body, timeout=CALL_MARGIN + (0 if no_wait else timeout))
    _report(reply, f"Staging model {id_}", no_wait, output)


@inference_group.command("start")
@api_options
@click.option("--model-id", "model_id", default=None, help="Model to run inference with [default: the newest]")
@click.option("--params", "params", default=None, help="Parameters for the clients' inference callback, as JSON")
@_wait_options(180.0)
@output_option
def inference_start(api: Api, model_id: str | None, params: str | None, client_ids: str | None, timeout: float,
                    no_wait: bool, output: str) -> None:
    """Run the clients' inference callback on a model; list what they logged with `scaleout inference list`."""
    body = {"model_id": model_id, "parameters": parse_json_object(params, "'--params'"),
            "client_ids": parse_id_list(client_ids), "timeout": timeout, "synchronous": not no_wait}
    reply = api.call("POST", "control/start_inference", json=body, timeout=CALL_MARGIN + (0 if no_wait else timeout))
    try:
        _report(reply, "Inference", no_wait, output)
    finally:
        if output == "human":
            click.echo(f"Results: scaleout inference list --run-id {reply.get('command_id')}")


@inference_group.command("list")
@api_options
@list_options
@click.option("--run-id", "run_id", default=None, help="Only the results of this inference run (its command id)")
@click.option("--model-id", "model_id", default=None, help="Only results of this model")
@click.option("--client-id", "client_id", default=None, help="Only results from this client")
def inference_list(api: Api, output: str, n_max: int | None, run_id: str | None, model_id: str | None,
                   client_id: str | None) -> None:
    """List inference results (what clients sent with log_inference_result, or predict callbacks returned),
    newest first."""
    params = {"prediction_id": run_id, "model_id": model_id, "sender.client_id": client_id}
    body = api.list("predictions/", params=params, n_max=n_max,
                    headers={"X-Sort-Key": "timestamp", "X-Sort-Order": "desc"})
    show_list("predictions", body, output, api.base_url)


def _end(api: Api, command_id: str, action: str, output: str) -> None:
    reply = api.call("POST", f"commands/{command_id}/{action}", json={"correlation_id": command_id})
    if output != "human":
        dump(reply, output)
        return
    click.echo(reply.get("message", reply) if isinstance(reply, dict) else reply)


@command_group.command("stop")
@api_options
@click.option("-id", "--id", "id_", required=True, help="Command ID (or a session ID)")
@output_option
def command_stop(api: Api, id_: str, output: str) -> None:
    """Stop a running command: clients still working on it are told to stop (a session ID stops the session)."""
    _end(api, id_, "stop", output)


@command_group.command("skip")
@api_options
@click.option("-id", "--id", "id_", required=True, help="Command ID")
@output_option
def command_skip(api: Api, id_: str, output: str) -> None:
    """Stop waiting for a running command: it finishes now with the answers in hand."""
    _end(api, id_, "skip", output)

