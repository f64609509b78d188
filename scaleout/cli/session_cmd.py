"""`scaleout session ...`: start, stop, inspect and wait for training sessions.

`session start --wait` (and `session wait`) follow the session round by round and end with one table:
per round its status, how many of the expected client updates arrived, how long it took, and the mean
of every numeric validation metric the clients reported for the round's new model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from scaleout.cli.api_options import (
    Api,
    ApiError,
    api_options,
    id_option,
    list_options,
    output_option,
    parse_json_object,
)
from scaleout.cli.groups import session_group
from scaleout.cli.output import (
    console,
    round_counts,
    round_duration,
    seconds,
    show_list,
    show_object,
    status_text,
    validation_cell,
)
from scaleoututil.api.client import FINAL_SESSION_STATUSES, session_config

POLL_INTERVAL = 1.0
FINAL_ROUND_STATUSES = frozenset({"finished", "failed", "stopped"})
VALIDATION_GRACE = 5.0  # seconds to wait for the last round's validations after the session ends


# -- the per-round summary (pure) ---------------------------------------------------------------------------
@dataclass
class RoundSummary:
    round_number: int | None
    status: str
    updates: int | None
    expected: int | None
    duration: float | None
    metrics: dict[str, float] = field(default_factory=dict)  # mean over the clients' validations
    new_model_id: str | None = None
    error: str | None = None
    validated: str = ""  # 'validated/asked' clients (output.validation_cell)


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def mean_metrics(validations: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Mean of each numeric metric over the given validations (a metric missing in some is averaged over the rest)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for validation in validations:
        data = validation.get("data")
        if not isinstance(data, dict):
            continue
        for key, value in data.items():
            number = _numeric(value)
            if number is None:
                continue
            sums[key] = sums.get(key, 0.0) + number
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def summarize_rounds(rounds: Sequence[dict[str, Any]], validations: Sequence[dict[str, Any]]) -> list[RoundSummary]:
    """One summary per round, in round order. A validation belongs to a round by `round_id`, or, when it
    has none, by validating the model that round produced."""
    by_round: dict[str, list[dict[str, Any]]] = {}
    by_model: dict[str, list[dict[str, Any]]] = {}
    for validation in validations:
        if validation.get("round_id"):
            by_round.setdefault(str(validation["round_id"]), []).append(validation)
        elif validation.get("model_id"):
            by_model.setdefault(str(validation["model_id"]), []).append(validation)
    summaries = []
    for round_ in sorted(rounds, key=lambda r: (r.get("round_number") is None, r.get("round_number") or 0)):
        updates, expected = round_counts(round_)
        mine = list(by_round.get(str(round_.get("round_id")), []))
        if round_.get("new_model_id"):
            mine += by_model.get(str(round_["new_model_id"]), [])
        summaries.append(RoundSummary(
            round_number=round_.get("round_number"),
            status=str(round_.get("status") or ""),
            updates=updates,
            expected=expected,
            duration=round_duration(round_),
            metrics=mean_metrics(mine),
            new_model_id=round_.get("new_model_id"),
            error=round_.get("error"),
            validated=validation_cell(round_),
        ))
    return summaries


def metric_columns(summaries: Sequence[RoundSummary]) -> list[str]:
    """Every metric name that appears, in first-seen order."""
    names: list[str] = []
    for summary in summaries:
        names.extend(name for name in summary.metrics if name not in names)
    return names


def clients_cell(summary: RoundSummary) -> str:
    if summary.updates is None and summary.expected is None:
        return ""
    got = "?" if summary.updates is None else str(summary.updates)
    return got if summary.expected is None else f"{got}/{summary.expected}"


def summary_table(summaries: Sequence[RoundSummary], title: str | None = None) -> Table:
    names = metric_columns(summaries)
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("Round", justify="right")
    table.add_column("Status")
    table.add_column("Clients", justify="right")
    validating = any(summary.validated for summary in summaries)
    if validating:
        table.add_column("Validated", justify="right")
    table.add_column("Duration", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for summary in summaries:
        table.add_row(str(summary.round_number or ""), status_text(summary.status), clients_cell(summary),
                      *([summary.validated] if validating else []), seconds(summary.duration),
                      *(f"{summary.metrics[name]:.4f}" if name in summary.metrics else "" for name in names))
    return table


def progress_line(summary: RoundSummary, total_rounds: Any) -> Text:
    total = f"/{total_rounds}" if total_rounds else ""
    line = Text(f"Round {summary.round_number}{total}  ")
    line.append_text(status_text(summary.status))
    clients = clients_cell(summary)
    if clients:
        line.append(f"  {clients} updates")
    if summary.duration is not None:
        line.append(f"  {seconds(summary.duration)}")
    if summary.error:
        line.append(f"  {summary.error}", style="red")
    return line


# -- talking to the controller ------------------------------------------------------------------------------
def fetch_rounds(api: Api, session_id: str) -> list[dict[str, Any]]:
    body = api.list("rounds/", params={"session_id": session_id},
                    headers={"X-Sort-Key": "round_number", "X-Sort-Order": "asc"})
    return [r for r in body["result"] if r.get("session_id") in (None, session_id)]


def fetch_validations(api: Api, session_id: str) -> list[dict[str, Any]]:
    body = api.list("validations/", params={"session_id": session_id})
    return [v for v in body["result"] if v.get("session_id") in (None, session_id)]


def _rounds_missing_validations(session: dict[str, Any], summaries: Sequence[RoundSummary]) -> bool:
    validate = (session.get("session_config") or {}).get("validate", True)
    if not validate or not summaries:
        return False
    last = summaries[-1]
    return last.status.lower() == "finished" and bool(last.new_model_id) and not last.metrics


def wait_for_session(api: Api, session_id: str, timeout: float | None, poll_interval: float | None = None,
                     interrupted: str | None = None) -> None:
    """Follow a session until it ends, then print the per-round table; exit 1 if it failed or timed out.
    `interrupted`: what to print on Ctrl-C instead of how to stop the still running session."""
    poll_interval = POLL_INTERVAL if poll_interval is None else poll_interval
    out = console()
    deadline = None if timeout is None else time.monotonic() + timeout
    reported: set[Any] = set()
    session: dict[str, Any] = {}
    live = Live(console=out, transient=True, auto_refresh=False) if out.is_terminal else None
    try:
        if live:
            live.start()
        while True:
            session = api.call("GET", f"sessions/{session_id}")
            summaries = summarize_rounds(fetch_rounds(api, session_id), [])
            total = (session.get("session_config") or {}).get("rounds")
            if live:
                lines = [progress_line(s, total) for s in summaries] or [Text(f"Session {session_id}: "
                                                                              f"{session.get('status')}")]
                live.update(Group(*lines), refresh=True)
            else:
                for summary in summaries:
                    if summary.status.lower() in FINAL_ROUND_STATUSES and summary.round_number not in reported:
                        reported.add(summary.round_number)
                        out.print(progress_line(summary, total))
            if str(session.get("status", "")).lower() in FINAL_SESSION_STATUSES:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise ApiError(f"Session {session_id} is still {session.get('status')} after {timeout:g} s; it keeps "
                               f"running on the controller. Follow it with `scaleout session wait -id {session_id}`.")
            time.sleep(poll_interval)
    except KeyboardInterrupt:
        if live:
            live.stop()
        out.print(interrupted or f"Stopped waiting; session {session_id} keeps running. Stop it with "
                                 f"`scaleout session stop -id {session_id}`.")
        raise SystemExit(130) from None
    finally:
        if live:
            live.stop()

    rounds = fetch_rounds(api, session_id)
    summaries = summarize_rounds(rounds, fetch_validations(api, session_id))
    grace_end = time.monotonic() + VALIDATION_GRACE
    while _rounds_missing_validations(session, summaries) and time.monotonic() < grace_end:
        time.sleep(min(poll_interval, 0.5))
        summaries = summarize_rounds(rounds, fetch_validations(api, session_id))
    status = str(session.get("status"))
    out.print(summary_table(summaries, title=f"Session {session.get('name') or session_id}: {status}"))
    if status.lower() == "failed":
        raise ApiError(f"Session {session_id} failed: {session.get('error') or 'no reason recorded'}")
    if status.lower() == "stopped":
        out.print(f"Session {session_id} was stopped.")


def latest_model_id(api: Api) -> str:
    body = api.list("models/", n_max=1, headers={"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"})
    if not body["result"]:
        raise ApiError("No models found in the repository: upload a seed model first with "
                       "`scaleout model set-active -f seed.npz`.")
    return str(body["result"][0]["model_id"])


def active_helper(api: Api) -> str:
    """The controller's active helper; numpyhelper when none is set (the official server answers 400)."""
    reply = api.send("GET", "helpers/active", allow=(400, 404))
    if reply.status_code == 200:
        try:
            body = reply.json()
        except ValueError:
            body = None
        if isinstance(body, str) and body:
            return body
        if isinstance(body, dict) and body.get("helper"):
            return str(body["helper"])
    return "numpyhelper"


def read_text_file(path: str | None, option: str) -> str | None:
    """A UTF-8 text file's content (None for no path); a usage error naming the option if unreadable."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None


# -- commands -----------------------------------------------------------------------------------------------
@session_group.command("start")
@api_options
@click.option("-n", "--name", default=None, help="Name of the session")
@click.option("-a", "--aggregator", default="fedavg", show_default=True,
              help="The aggregation strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox, fedmedian, "
                   "fedtrimmedavg, krum or multikrum (the controller checks the name)")
@click.option("-ak", "--aggregator_kwargs", "aggregator_kwargs", default=None,
              help="The strategy's keywords as a JSON object, e.g. '{\"server_lr\": 0.01, \"beta1\": 0.9}' "
                   "(fedavg takes none)")
@click.option("-m", "--model_id", "model_id", default=None, help="The id of the initial model [default: the newest]")
@click.option("-rt", "--round_timeout", "round_timeout", type=click.IntRange(min=1), default=180, show_default=True,
              help="The round timeout to use in seconds")
@click.option("-r", "--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="The number of rounds to perform")
@click.option("-rb", "--round_buffer_size", "--buffer-size", "round_buffer_size", type=int, default=-1,
              show_default=True, help="Aggregate when this many updates arrived (-1: all requested clients); "
                                      "with --mode async, every this many updates")
@click.option("-d", "--delete_models", "delete_models", type=click.BOOL, default=True, show_default=True,
              help="Whether to delete client updates after aggregation (save storage)")
@click.option("-v", "--validate", type=click.BOOL, default=True, show_default=True,
              help="Whether to validate the model after each round (true/false)")
@click.option("-hp", "--helper", default=None, help="The helper type to use [default: the controller's active helper]")
@click.option("-mc", "--min_clients", "min_clients", type=click.IntRange(min=1), default=1, show_default=True,
              help="The minimum number of clients required")
@click.option("-rc", "--requested_clients", "requested_clients", type=click.IntRange(min=1), default=8,
              show_default=True, help="The requested number of clients")
@click.option("--server-functions", "server_functions",
              type=click.Path(exists=True, dir_okay=False, readable=True), default=None,
              help="A Python file defining class ServerFunctions (client selection, client settings, aggregation) "
                   "for the server to run each round")
@click.option("--mode", type=click.Choice(["sync", "async"]), default=None,
              help="async: no round barriers; clients train continuously and every --buffer-size updates make a "
                   "new global model (-r counts these aggregations) [default: sync]")
@click.option("--staleness-exponent", "staleness_exponent", type=click.FloatRange(min=0), default=None,
              help="With --mode async: an update trained from a model s versions old weighs "
                   "num_examples / (1 + s) ** this [default: 0.5]")
@click.option("--wait", is_flag=True, help="Wait until the session ends and print a per-round summary")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="With --wait: give up waiting after this many seconds [default: no limit]")
def session_start(api: Api, name: str | None, aggregator: str, aggregator_kwargs: str | None, model_id: str | None,
                  round_timeout: int, rounds: int, round_buffer_size: int, delete_models: bool, validate: bool,
                  helper: str | None, min_clients: int, requested_clients: int, server_functions: str | None,
                  mode: str | None, staleness_exponent: float | None, wait: bool, timeout: float | None) -> None:
    """Start a new training session."""
    kwargs = parse_json_object(aggregator_kwargs, "'-ak' / '--aggregator_kwargs'")
    aggregator = aggregator.strip().lower()  # the registered names are lower case; `-a FedAdam` means fedadam
    if model_id is None:
        model_id = latest_model_id(api)
    if helper is None:
        helper = active_helper(api)
    config = session_config(aggregator=aggregator, aggregator_kwargs=kwargs, rounds=rounds,
                            round_timeout=round_timeout, buffer_size=round_buffer_size, model_id=model_id,
                            delete_models=delete_models, min_clients=min_clients,
                            requested_clients=requested_clients, validate=validate, helper=helper,
                            server_functions=read_text_file(server_functions, "--server-functions"), mode=mode,
                            staleness_exponent=staleness_exponent)
    created = api.call("POST", "sessions/", json={"name": name, "seed_model_id": model_id, "session_config": config})
    session_id = created.get("session_id") if isinstance(created, dict) else None
    if not session_id:
        raise ApiError(f"The controller did not return a session id: {str(created)[:200]}")
    api.call("POST", "sessions/start", json={"session_id": session_id, "rounds": rounds,
                                             "round_timeout": round_timeout})
    kind = "asynchronous aggregation(s)" if mode == "async" else "round(s)"
    click.echo(f"Session {session_id} started: {rounds} {kind}, aggregator {aggregator}, model {model_id}"
               + (", with server functions." if server_functions else "."))
    if wait:
        wait_for_session(api, session_id, timeout)
    else:
        click.echo(f"Follow it with `scaleout session wait -id {session_id}`.")


@session_group.command("wait")
@api_options
@id_option("Session")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Give up waiting after this many seconds [default: no limit]")
def session_wait(api: Api, id_: str, timeout: float | None) -> None:
    """Wait for a session to end and print its per-round summary (exit 1 if it failed)."""
    wait_for_session(api, id_, timeout)


@session_group.command("stop")
@api_options
@click.option("-id", "--id", "id_", default=None, help="Session ID [default: the running session]")
def session_stop(api: Api, id_: str | None) -> None:
    """Stop a session: abort its clients' tasks and end it as Stopped."""
    reply = api.call("POST", "control/stop", json={"session_id": id_} if id_ else {})
    message = reply.get("message") if isinstance(reply, dict) else None
    click.echo(message or f"Stop requested for session {id_ or '(running)'}.")


@session_group.command("list")
@api_options
@list_options
def session_list(api: Api, output: str, n_max: int | None) -> None:
    """List sessions, newest first."""
    body = api.list("sessions/", n_max=n_max, headers={"X-Sort-Key": "committed_at", "X-Sort-Order": "desc"})
    show_list("sessions", body, output, api.base_url)


@session_group.command("get")
@api_options
@id_option("Session")
@output_option
def session_get(api: Api, id_: str, output: str) -> None:
    """Show one session."""
    show_object("sessions", api.call("GET", f"sessions/{id_}"), output)
