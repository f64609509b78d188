"""Resume the session a killed controller left running, at the round it interrupted.

Everything a session needs survives in the store: its config (with the latest committed model, which
`commit_round` writes in the same transaction as the round's result), its rounds and their states.
When a controller starts and finds a synchronous session still marked Running, the rule is:

- a round in Validating had its model committed: it is marked Finished (its validation is incomplete);
- a round in Pending or Running had nothing committed: its record is removed (the store allows one
  record per round number, and the rerun takes that number) and the round is run again, from the
  session's latest model. Updates its clients had already sent stay in the store under the removed
  round's id, folded into no model; the rerun's model is built only from the rerun's updates (listed
  per combiner in the round's `combiners[].update_ids`). So every number ends Finished once and no
  update is counted twice;
- the session then runs the rounds it still owes: `rounds` of its config minus the rounds Finished since
  it was started; with none left it is marked Finished.

Combiners keep their clients while the controller is away (the killed controller's RunRound calls are
cancelled on their side) and are asked once more to abort the session's old tasks before it resumes.
Asynchronous (buffered) sessions and any further session left Running are failed as before.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaleout_server.controller.async_sessions import ASYNC_MODE
from scaleout_server.controller.combiners import as_utc
from scaleout_server.controller.session_config import SessionConfig
from scaleout_server.controller.session_modes import make_runner
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store
from scaleoututil.protocol import RoundStatus, SessionStatus

if TYPE_CHECKING:
    from scaleout_server.controller.core import Controller

log = logging.getLogger(__name__)

VALIDATION_INTERRUPTED = "validation interrupted by a controller restart"
ABORT_REASON = "the controller restarted; the interrupted round runs again"


@dataclass
class ResumePlan:
    session_id: str
    rounds: int  # rounds still owed
    round_timeout: float
    round_number: int  # the number the next round gets
    rerun: list[int]  # numbers of the interrupted rounds that run again


def plan_resume(store: Store) -> ResumePlan | None:
    """Settle the rounds of the newest synchronous session left Running and say how to continue it;
    None when there is nothing to resume (the caller fails whatever else is left Running)."""
    _, running = store.sessions.list(ListQuery(filters={"status": SessionStatus.RUNNING.value},
                                               sort_key="started_at"))
    if not running:
        return None
    session = running[0]
    config = SessionConfig.from_stored(session.session_config)
    if config.mode == ASYNC_MODE:
        log.warning("session %s is asynchronous: it is not resumed after a controller restart", session.session_id)
        return None
    if not config.model_id or store.models.get(config.model_id) is None:
        log.warning("session %s cannot be resumed: its model %r is missing", session.session_id, config.model_id)
        return None
    _, rounds = store.rounds.list(ListQuery(filters={"session_id": session.session_id}, sort_key="round_number",
                                            descending=False))
    rerun: list[int] = []
    for round_ in rounds:
        if round_.status == RoundStatus.VALIDATING:
            round_.status = RoundStatus.FINISHED
            round_.round_data = {**round_.round_data, "validation_error": VALIDATION_INTERRUPTED}
            round_.finished_at = r.utcnow()
            store.rounds.update(round_)
            log.warning("session %s round %d: model was committed; %s", session.session_id, round_.round_number,
                        VALIDATION_INTERRUPTED)
        elif round_.status in (RoundStatus.PENDING, RoundStatus.RUNNING):
            store.rounds.delete(round_.round_id)
            rerun.append(round_.round_number)
            log.warning("session %s round %d (%s) was interrupted by a controller restart; it runs again",
                        session.session_id, round_.round_number, round_.round_id)
    started = as_utc(session.started_at)
    finished = [x for x in rounds if x.status == RoundStatus.FINISHED
                and (started is None or (as_utc(x.started_at) or started) >= started)]
    return ResumePlan(session_id=session.session_id, rounds=max(0, config.rounds - len(finished)),
                      round_timeout=config.round_timeout, round_number=len(rounds) - len(rerun) + 1, rerun=rerun)


def resume(controller: Controller, plan: ResumePlan) -> None:
    """Continue the planned session in the background (after asking combiners to drop its old tasks);
    a session that owes no round is marked Finished at once."""
    store = controller.store
    session = store.sessions.require(plan.session_id)
    if plan.rounds <= 0:
        session.status = SessionStatus.FINISHED
        session.finished_at = r.utcnow()
        store.sessions.update(session)
        log.info("session %s: all its rounds had finished before the restart; marked Finished", plan.session_id)
        return
    config = SessionConfig.from_stored(session.session_config)
    runner = make_runner(controller.settings, config, store, controller.repository, controller.registry,
                         controller.dispatcher, plan.session_id, plan.rounds, plan.round_timeout,
                         on_exit=controller._runner_exited)

    def go() -> None:
        try:
            controller.registry.abort_session(plan.session_id, ABORT_REASON)
        except Exception:  # a combiner that is down has no tasks to abort
            log.warning("session %s: could not reach every combiner to abort old tasks", plan.session_id)
        with controller._lock:  # meanwhile the session is Running in the store: nothing else can start
            if controller._closing.is_set():
                return  # shut down before resuming: the next start resumes it
            runner.start()  # started before it is visible: others may join() it at once
            controller._runner = runner
        log.info("session %s: resumed at round %d, %d round(s) to go, from model %s", plan.session_id,
                 plan.round_number, plan.rounds, config.model_id)

    threading.Thread(target=go, name=f"resume-{plan.session_id[:8]}", daemon=True).start()
