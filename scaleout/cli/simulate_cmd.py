"""`scaleout simulate`: run N virtual clients of a project against a local server, one session, a table.

For research and for trying a project before deploying it: the server and the clients are the real
ones (real protocol on 127.0.0.1), only many clients share a process and each trains on its own
partition of the data (`client.partition` in startup). See scaleout/simulation/.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scaleout.cli.api_options import Api, parse_json_object
from scaleout.cli.extras import needs_server
from scaleout.cli.groups import cli
from scaleout.cli.output import console
from scaleout.cli.session_cmd import fetch_rounds, fetch_validations, read_text_file, wait_for_session
from scaleout.simulation.runner import Simulation, SimulationConfig, SimulationError


@cli.command("simulate")
@click.option("-p", "--path", "path", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="The project: the client folder with scaleout.yaml (or the folder holding client/).")
@click.option("--clients", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of virtual clients; client i trains on partition i of N (client.partition).")
@click.option("-r", "--rounds", type=click.IntRange(min=1), default=5, show_default=True, help="Training rounds.")
@click.option("-a", "--aggregator", default="fedavg", show_default=True,
              help="Aggregation strategy (fedavg, fedadam, fedyogi, fedadagrad, fedprox, median, trimmedmean, "
                   "krum, ...), as for `session start`.")
@click.option("-ak", "--aggregator_kwargs", "aggregator_kwargs", default=None,
              help='Strategy parameters as JSON, e.g. \'{"serveropt_lr": 0.1}\'.')
@click.option("--clients-per-round", type=click.IntRange(min=1), default=None,
              help="Clients asked to train each round  [default: all of them]")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Ask every client to validate each new global model.")
@click.option("--round-timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Seconds a round waits for updates.")
@click.option("--server-functions", "server_functions", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A Python file with a ServerFunctions class (client selection, settings, aggregation).")
@click.option("--seed-model", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Initial model file  [default: what the project's build() writes]")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the virtual clients run: child processes of this one, or Ray actors.")
@click.option("--ray-address", default=None,
              help="With --backend ray: an existing cluster's address (e.g. 'auto')  [default: a local cluster]")
@click.option("--hosts", type=click.IntRange(min=1), default=None,
              help="Processes (or Ray actors) the clients are spread over  [default: one per CPU]")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Callbacks (train, validate) that may run at once in each host.")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the server's database, models, logs and results.json go  "
                   "[default: ./.scaleout-simulation/run-<time>]")
@click.option("-n", "--name", default=None, help="Session name  [default: simulation-<run folder>]")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Give up after this many seconds of training  [default: no limit]")
@needs_server("scaleout simulate")
def simulate(path: Path, clients: int, rounds: int, aggregator: str, aggregator_kwargs: str | None,
             clients_per_round: int | None, validate: bool, round_timeout: int, server_functions: str | None,
             seed_model: Path | None, backend: str, ray_address: str | None, hosts: int | None, parallel: int,
             work_dir: Path | None, name: str | None, timeout: float | None) -> None:
    """Run a federated session of N virtual clients of a project on this machine.

    Starts a local server (SQLite and a folder, free ports on 127.0.0.1), builds the seed model, starts
    the virtual clients (real clients over the real protocol, many per process), trains for --rounds and
    prints the per-round table. Everything stops at the end; the work folder keeps the database, the
    logs and results.json (rounds and validations).

    \b
    Example:
      scaleout simulate -p client --clients 100 --rounds 5
    """
    config = SimulationConfig(project=path, clients=clients, rounds=rounds, hosts=hosts, parallel=parallel,
                              backend=backend, ray_address=ray_address, aggregator=aggregator.strip().lower(),
                              aggregator_kwargs=parse_json_object(aggregator_kwargs, "'-ak' / '--aggregator_kwargs'"),
                              round_timeout=round_timeout, validate=validate, clients_per_round=clients_per_round,
                              server_functions=read_text_file(server_functions, "--server-functions"),
                              seed_model=seed_model, work_dir=work_dir, name=name)
    out = console()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=out, transient=True) as bar:
            task = bar.add_task("preparing", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bar.update(task, description=what, completed=done, total=total)

            with Simulation(config, progress=progress) as sim:
                out.print(f"Simulation in {sim.work}: {clients} virtual client(s), {rounds} round(s), "
                          f"backend {backend}")
                sim.prepare()
                bar.stop()
                session_id = sim.start_session()
                api = Api(sim.api_url)
                out.print(f"Session {session_id} started on {sim.api_url}")
                try:
                    wait_for_session(api, session_id, timeout,
                                     interrupted="Interrupted: stopping the virtual clients and the server.")
                finally:
                    results = {"api_url": sim.api_url, "session": api.call("GET", f"sessions/{session_id}"),
                               "rounds": fetch_rounds(api, session_id),
                               "validations": fetch_validations(api, session_id)}
                    (sim.work / "results.json").write_text(json.dumps(results, indent=2, default=str))
                    out.print(f"Results: {sim.work / 'results.json'}; server database and logs: {sim.work}")
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
