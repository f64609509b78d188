"""Entry point of the `scaleout` command. Importing a command module attaches its commands."""

from __future__ import annotations

from scaleout.cli import (  # noqa: F401  (imported for their commands)
    client_cmd,
    context_cmd,
    enroll_cmd,
    inference_cmd,
    package_cmd,
    resources_cmd,
    run_cmd,
    security_cmd,
    server_cmd,
    session_cmd,
    simulate_cmd,
    token_cmd,
)
from scaleout.cli.groups import cli


def main() -> None:
    cli(prog_name="scaleout")


if __name__ == "__main__":
    main()
