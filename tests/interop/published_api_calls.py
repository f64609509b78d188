"""Run by the published 1.1 venv's Python (not collected by pytest): call every public method of the
published API client (`scaleoututil.api.client.Scaleout`) against our server and print, as JSON, each
method's answer and every HTTP exchange made (method, path, status, body start).

Usage: python published_api_calls.py '<json: url, token, seed, package, model_id, client_id, workdir>'
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from typing import Any

import requests

from scaleoututil.api.client import Scaleout

HTTP: list[tuple[str, str, int, str]] = []
_send = requests.Session.send


def _recording_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
    reply = _send(self, request, **kwargs)
    body = "" if kwargs.get("stream") else reply.text[:200]
    HTTP.append((str(request.method), requests.utils.urlparse(request.url).path, reply.status_code, body))
    return reply


requests.Session.send = _recording_send  # type: ignore[method-assign]


def main() -> None:
    args = json.loads(sys.argv[1])
    api = Scaleout(host=args["url"], token=args["token"])
    model_id, client_id, work = args["model_id"], args["client_id"], args["workdir"]
    state: dict[str, Any] = {}

    def session() -> Any:
        state["session"] = api.start_session(name=f"published-{time.time_ns()}", rounds=1, round_timeout=60,
                                             validate=False, min_clients=1)
        return state["session"]

    def nap() -> Any:
        state["command"] = api.run_custom_command("nap", timeout=60, parameters={"seconds": 30})
        return state["command"]

    def wait_session() -> Any:
        for _ in range(240):
            if api.session_is_finished(state["session"]["session_id"]):
                return True
            time.sleep(0.5)
        return False

    calls = {
        "get_client": lambda: api.get_client(client_id),
        "get_clients": lambda: api.get_clients(n_max=5),
        "get_clients_count": lambda: api.get_clients_count(only_active=True),
        "get_client_config": lambda: api.get_client_config(),
        "get_active_clients": lambda: api.get_active_clients(),
        "get_combiners": lambda: api.get_combiners(),
        "get_combiner": lambda: api.get_combiner(api.get_combiners()["result"][0]["combiner_id"]),
        "get_combiners_count": lambda: api.get_combiners_count(),
        "set_public_hostname": lambda: api.set_public_hostname(api.get_combiners()["result"][0]["combiner_id"],
                                                               "127.0.0.1"),
        "get_controller_status": lambda: api.get_controller_status(),
        "set_active_model": lambda: api.set_active_model(args["seed"]),
        "get_model": lambda: api.get_model(model_id),
        "get_models": lambda: api.get_models(),
        "get_models_count": lambda: api.get_models_count(),
        "get_active_model": lambda: api.get_active_model(),
        "get_model_trail": lambda: api.get_model_trail(model_id),
        "download_model": lambda: api.download_model(model_id, f"{work}/model.bin"),
        "set_active_package": lambda: api.set_active_package(args["package"], "numpyhelper", "published-calls"),
        "get_active_package": lambda: api.get_active_package(),
        "get_package": lambda: api.get_package(api.get_active_package()["package_id"]),
        "get_packages": lambda: api.get_packages(),
        "get_packages_count": lambda: api.get_packages_count(),
        "get_package_checksum": lambda: api.get_package_checksum(),
        "download_package": lambda: api.download_package(f"{work}/package.tgz"),
        "stage_model": lambda: api.stage_model(model_id, client_ids=[client_id]),
        "start_inference": lambda: api.start_inference(model_id, timeout=60, client_ids=[client_id],
                                                       parameters={"n": 1, "label": "published"}),
        "start_session": session,
        "session_is_finished": wait_session,
        "continue_session": lambda: api.continue_session(state["session"]["session_id"], rounds=1, round_timeout=60),
        "stop_current_command": lambda: api.stop_current_command(),
        "get_session": lambda: api.get_session(state["session"]["session_id"]),
        "get_sessions": lambda: api.get_sessions(),
        "get_sessions_count": lambda: api.get_sessions_count(),
        "get_session_status": lambda: api.get_session_status(state["session"]["session_id"]),
        "get_rounds": lambda: api.get_rounds(),
        "get_round": lambda: api.get_round(api.get_rounds()["result"][0]["round_id"]),
        "get_rounds_count": lambda: api.get_rounds_count(),
        "start_validation": lambda: api.start_validation(state["session"]["session_id"], model_id),
        "get_validation": lambda: api.get_validation("none"),
        "get_validations": lambda: api.get_validations(),
        "get_validations_count": lambda: api.get_validations_count(),
        "get_metrics": lambda: api.get_metrics(),
        "get_metrics_count": lambda: api.get_metrics_count(),
        "add_status": lambda: api.add_status({"type": "MODEL_UPDATE", "log_level": "INFO", "status": "by hand",
                                              "sender": {"client_id": client_id}}),
        "get_statuses": lambda: api.get_statuses(),
        "get_status": lambda: api.get_status(api.get_statuses(n_max=1)["result"][0]["status_id"]),
        "get_statuses_count": lambda: api.get_statuses_count(),
        "run_custom_command": nap,
        "get_command": lambda: api.get_command(state["command"]["command_id"]),
        "step_command": lambda: api.step_command(state["command"]["command_id"]),
        "stop_command": lambda: (nap(), api.stop_command(state["command"]["command_id"]))[1],
        "step_current_command": lambda: (nap(), api.step_current_command())[1],
        "get_commands": lambda: api.get_commands(),
        "get_commands_roots": lambda: api.get_commands_roots(),
        "get_commands_count": lambda: api.get_commands_count(),
        "add_attributes": lambda: api.add_attributes({"key": "charging", "value": "true", "entity_id": client_id}),
        "get_current_attributes": lambda: api.get_current_attributes(client_id),
        "get_attribute_trail": lambda: api.get_attribute_trail(client_id),
    }
    public = sorted(name for name, _ in inspect.getmembers(Scaleout) if not name.startswith("_"))
    answers: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            answers[name] = call()
        except Exception as exc:  # reported to the test, which names the method
            answers[name] = {"raised": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({"public": public, "answers": answers, "http": HTTP}, default=str))


if __name__ == "__main__":
    main()
