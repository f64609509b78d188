"""Ad-hoc task batches (custom commands, predictions, validations) fanned out to the combiners
that hold the chosen clients, one `Control.RunTasks` call per combiner, in parallel.

Every chosen client gets a result entry: the combiner's report, or FAILED with the reason when
its combiner could not be asked.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scaleout_server.controller.combiners import ActiveClient, CombinerRegistry, await_all
from scaleout_server.errors import InvalidInput
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.jsontext import loads_lenient
from scaleoututil.protocol import TaskStatus

log = logging.getLogger(__name__)

CALL_MARGIN = 30.0  # extra seconds the gRPC deadline allows beyond the batch's own timeout


@dataclass
class TaskBatch:
    task_type: str
    data: dict[str, Any] = field(default_factory=dict)
    model_id: str = ""
    session_id: str = ""
    round_id: str = ""
    batch_id: str = ""
    timeout: float = 60.0


@dataclass
class Target:
    combiner: r.CombinerRecord
    clients: list[ActiveClient]


def result_dict(result: pb.TaskResult, combiner: r.CombinerRecord) -> dict[str, Any]:
    return {
        "client_id": result.client_id,
        "client_name": result.client_name,
        "combiner": combiner.name,
        "correlation_id": result.correlation_id,
        "status": result.status,
        "response": loads_lenient(result.response),
    }


class TaskDispatcher:
    def __init__(self, registry: CombinerRegistry) -> None:
        self.registry = registry

    def resolve(self, client_ids: list[str] | None) -> list[Target]:
        """Group the chosen clients (default: every connected one) by the combiner that holds them.

        InvalidInput names the ids that no combiner reports as connected."""
        combiners = {c.combiner_id: c for c in self.registry.online()}
        active = self.registry.active_clients(combiners.values())
        by_id: dict[str, ActiveClient] = {c.client_id: c for clients in active.values() for c in clients}
        if client_ids:
            wanted = list(dict.fromkeys(client_ids))
            missing = [cid for cid in wanted if cid not in by_id]
            if missing:
                raise InvalidInput(f"clients not connected (unknown or offline): {', '.join(missing)}; "
                                   f"connected: {', '.join(sorted(by_id)) or 'none'}")
            chosen = [by_id[cid] for cid in wanted]
        else:
            chosen = list(by_id.values())
        if not chosen:
            raise InvalidInput("no client is connected; start one with `scaleout client start`")
        targets: dict[str, Target] = {}
        for client in chosen:
            targets.setdefault(client.combiner_id, Target(combiners[client.combiner_id], [])).clients.append(client)
        return list(targets.values())

    def run(self, batch: TaskBatch, targets: list[Target], stop: threading.Event | None = None,
            grace: float | Callable[[], float] = 5.0) -> list[dict[str, Any]]:
        """RunTasks on every target combiner at once; blocks until all answered (or their deadline),
        or until `stop` is set (then the calls still running are cancelled after `grace` seconds)."""
        calls = []
        for target in targets:
            spec = pb.TaskBatchSpec(
                session_id=batch.session_id, round_id=batch.round_id, model_id=batch.model_id, type=batch.task_type,
                data=json.dumps(batch.data), client_ids=[c.client_id for c in target.clients],
                timeout=batch.timeout, batch_id=batch.batch_id)
            try:
                future = self.registry.stub(target.combiner).RunTasks.future(spec, timeout=batch.timeout + CALL_MARGIN)
            except Exception as exc:  # reported per client below
                calls.append((target, None, exc))
                continue
            calls.append((target, future, None))
        await_all([future for _, future, _ in calls if future is not None], stop, grace)
        results: list[dict[str, Any]] = []
        for target, future, error in calls:
            if future is not None:
                try:
                    outcome = future.result()
                except Exception as exc:
                    error = exc
                else:
                    results.extend(result_dict(res, target.combiner) for res in outcome.results)
                    self.registry.heard_from(target.combiner.combiner_id)
                    continue
            message = self.registry.call_failed(target.combiner, f"RunTasks({batch.task_type})", error)
            results.extend({"client_id": c.client_id, "client_name": c.name, "combiner": target.combiner.name,
                            "correlation_id": "", "status": TaskStatus.FAILED.value,
                            "response": {"error": message}} for c in target.clients)
        return results
