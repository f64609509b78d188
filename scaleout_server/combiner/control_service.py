"""The `scaleout.Control` servicer: how the controller drives this combiner.

Each call blocks until its work is done and returns a typed outcome; the rules live in
`rounds.Rounds`. When the controller gave the combiner a control token at registration, every
call must carry it (metadata `control-token`), so a client that can reach the combiner's port
cannot start rounds or abort sessions.
"""

from __future__ import annotations

import hmac
import logging
import time

import grpc

from scaleout_server.combiner.client_manager import ClientManager
from scaleout_server.combiner.client_service import metadata_of
from scaleout_server.combiner.rounds import Rounds
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MD_CONTROL_TOKEN = "control-token"


class ControlService(pb_grpc.ControlServicer):
    """Control calls from the controller, each checked against the control token first."""

    def __init__(self, clients: ClientManager, rounds: Rounds, control_token: str | None = None) -> None:
        self.clients = clients
        self.rounds = rounds
        self.control_token = control_token

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.control_token:
            return
        given = metadata_of(context).get(MD_CONTROL_TOKEN, "")
        if not hmac.compare_digest(given.encode(), self.control_token.encode()):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "Control calls need metadata 'control-token'")

    async def RunRound(self, request: pb.RoundSpec, context: grpc.aio.ServicerContext) -> pb.RoundOutcome:
        await self._authorize(context)
        try:
            return await self.rounds.run_round(request)
        except Exception as exc:
            log.exception("round %s of session %s failed", request.round_id, request.session_id)
            return pb.RoundOutcome(error=f"combiner error: {exc}")

    async def RunTasks(self, request: pb.TaskBatchSpec, context: grpc.aio.ServicerContext) -> pb.TaskBatchOutcome:
        await self._authorize(context)
        if not request.type:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "TaskBatchSpec.type is required, e.g. Custom_ping")
        return await self.rounds.run_tasks(request)

    async def AbortSession(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.Response:
        await self._authorize(context)
        if request.conclude:
            rounds = self.rounds.conclude_session(request.session_id)
            return pb.Response(response=f"{rounds} round(s) concluded")
        count = self.rounds.abort_session(request.session_id)
        return pb.Response(response=f"{count} task(s) stopped")

    async def ListActiveClients(self, request: pb.ClientListRequest, context: grpc.aio.ServicerContext
                                ) -> pb.ClientList:
        await self._authorize(context)
        at = time.time()
        # a client whose poll we hold is here now: saying so (rather than when that poll arrived, up to 9 s
        # ago) keeps the controller's sweep from finding it stale again a few seconds later
        return pb.ClientList(clients=[
            pb.ActiveClient(client_id=s.client_id, name=s.name, busy=s.busy,
                            last_seen=at if s.polling > 0 else s.last_seen_wall)
            for s in self.clients.active_clients()])
