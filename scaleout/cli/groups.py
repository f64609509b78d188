"""The `scaleout` command groups. Command modules attach their commands to these groups,
so one group (e.g. `client`) can hold commands written in different modules."""

from __future__ import annotations

import click

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="scaleout-edge-open", prog_name="scaleout")
def cli() -> None:
    """Scaleout Edge: federated learning on your own infrastructure.

    \b
    Typical flow, from a project folder that holds client/:
      scaleout server start                       # controller + combiner on this machine
      scaleout run build -p client                # writes seed.npz
      scaleout package create --path client       # writes package.tgz
      scaleout package set-active --file package.tgz -n v1
      scaleout model set-active --file seed.npz
      scaleout client start --api-url http://127.0.0.1:8092
      scaleout session start --rounds 3
    """


def _group(name: str, help_text: str) -> click.Group:
    group = click.Group(name=name, help=help_text, context_settings=CONTEXT_SETTINGS)
    cli.add_command(group)
    return group


client_group = _group("client", "Start an edge client; list and inspect clients.")
combiner_group = _group("combiner", "Start a stand-alone combiner; list and inspect combiners.")
controller_group = _group("controller", "Start a stand-alone controller (REST API, sessions, UI).")
server_group = _group("server", "Run the whole server (controller + one combiner) on this machine.")
run_group = _group("run", "Run a project's entry points locally (build, install).")
package_group = _group("package", "Create compute packages, upload and activate them.")
model_group = _group("model", "Upload seed models; list, inspect and download models.")
session_group = _group("session", "Start, stop and inspect training sessions.")
round_group = _group("round", "Inspect the rounds of sessions.")
validation_group = _group("validation", "Inspect validation results; validate a model.")
status_group = _group("status", "Inspect status messages sent by clients.")
metric_group = _group("metric", "Inspect metrics logged by clients with log_metric.")
prediction_group = _group("prediction", "Run predictions on clients and inspect the results.")
inference_group = _group("inference", "Run inference on clients (models staged with `model stage`); list the results.")
command_group = _group("command", "Run custom commands on clients and see their results.")
certs_group = _group("certs", "Create a development CA and server certificate for TLS.")
keys_group = _group("keys", "Create Ed25519 key pairs for signing compute packages.")
token_group = _group("token", "Create, list and revoke the tokens of a secured server.")
