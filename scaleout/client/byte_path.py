"""Our client's end of the byte path: large models over a plain TCP/TLS connection beside the gRPC port.

Why: see scaleoututil/bytepath.py (the wire format both ends share). The client asks its combiner for a
ticket with `ModelService.OpenTransfer` (an ordinary RPC: token, rate limit and retries as usual); an
empty ticket, an UNIMPLEMENTED answer (an older combiner) or a port it cannot reach sends the transfer
down the gRPC path instead, and an unreachable byte path is not tried again until the channel is
rebuilt. `SCALEOUT_BYTE_PATH=off` keeps every transfer on gRPC.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from typing import Any, Protocol

import grpc

from scaleoututil import bytepath
from scaleoututil.checksum import DIGESTS, SHA256
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel, new_spool

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # a port that does not answer by then is treated as unreachable (gRPC is used)
IO_TIMEOUT = 120.0  # a transfer that stalls this long is dropped and retried
ENV_SWITCH = "SCALEOUT_BYTE_PATH"  # "off": every transfer over gRPC


class ByteTransferFailed(Exception):
    """A byte-path transfer failed after it started; `retryable` says whether asking again can help."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Link(Protocol):
    """What the byte path needs of the client's Connection (connection.py)."""

    target: Any
    generation: int
    models: Any

    def metadata(self, *extra: tuple[str, str]) -> list[tuple[str, str]]: ...


class BytePath:
    """Transfers over the combiner's byte path; each method returns None when gRPC must be used instead."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self._enabled = os.environ.get(ENV_SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")
        self._off_generation: int | None = None  # channel generation for which the byte path is unreachable

    @property
    def usable(self) -> bool:
        return self._enabled and self._off_generation != self._link.generation

    # -- the two directions -------------------------------------------------------------------------
    def download(self, model_id: str) -> tuple[ScaleoutModel, str | None, str] | None:
        """(model, checksum the combiner sent or None, checksum of the bytes received), or None: use gRPC."""
        ticket = self._ticket(pb.TransferOffer(direction="download", model_id=model_id, digests=list(DIGESTS)))
        sock = self._connect(ticket) if ticket is not None else None
        if sock is None:
            return None
        spool = new_spool()
        try:
            with sock:
                bytepath.send_line(sock, f"{bytepath.PROTOCOL} {ticket.ticket}")  # type: ignore[union-attr]
                size = _parse_size(bytepath.expect(bytepath.read_line(sock), "OK"))
                algorithm = ticket.digest or SHA256  # type: ignore[union-attr]
                received = bytepath.receive_to_file(sock, spool.fileno(), size, algorithm)  # a real file
                announced = bytepath.parse_checksum(bytepath.read_line(sock), algorithm)
            spool.seek(0)
            model = ScaleoutModel.from_spool(spool, model_id)
        except TRANSFER_ERRORS as exc:
            spool.close()
            raise _failure(f"download of model {model_id}", exc) from exc
        except BaseException:
            spool.close()
            raise
        return model, announced, received

    def upload(self, model: ScaleoutModel) -> bool:
        """True once the combiner acknowledged the update (checked and durable); False: use gRPC."""
        size = model.size
        # a SHA-256 computed already (e.g. for the gRPC metadata) is offered first: sending it costs no
        # second pass over the bytes on this side; else the fastest algorithm both ends have
        digests = [SHA256, *(d for d in DIGESTS if d != SHA256)] if model.known_checksum else list(DIGESTS)
        ticket = self._ticket(pb.TransferOffer(direction="upload", model_id=str(model.model_id), size=size,
                                               digests=digests))
        sock = self._connect(ticket) if ticket is not None else None
        if sock is None:
            return False
        algorithm = ticket.digest or SHA256  # type: ignore[union-attr]
        # the SHA-256 computed already is reused; else hashed while the bytes go out: no separate pass
        known = model.known_checksum if algorithm == SHA256 else None
        try:
            with sock:
                bytepath.send_line(sock, f"{bytepath.PROTOCOL} {ticket.ticket}")  # type: ignore[union-attr]
                bytepath.expect(bytepath.read_line(sock), "GO")
                container = model.get_stream_unsafe()  # never modified: a re-stamp builds a new one
                hashed = bytepath.send_file(sock, container, size, hash_it=known is None, algorithm=algorithm)
                bytepath.send_line(sock, bytepath.checksum_line(known or hashed, algorithm))
                bytepath.expect(bytepath.read_line(sock), "OK")
        except TRANSFER_ERRORS as exc:
            raise _failure(f"upload of model {model.model_id}", exc) from exc
        return True

    # -- negotiation ----------------------------------------------------------------------------------
    def _ticket(self, offer: pb.TransferOffer) -> pb.TransferTicket | None:
        """A ticket, or None when this combiner offers none; other RPC errors go to the caller's retry loop."""
        if not self.usable:
            return None
        try:
            ticket = self._link.models.OpenTransfer(offer, metadata=self._link.metadata(), timeout=30.0)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.UNIMPLEMENTED:  # a combiner without the byte path
                self._turn_off("the combiner does not offer it")
                return None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # over the size limit: sending again cannot help
                raise ByteTransferFailed(f"the combiner refused model {offer.model_id}: {exc.details()}",
                                         retryable=False) from exc
            raise
        if not ticket.ticket:
            logger.debug("no byte path for model %s: %s", offer.model_id, ticket.reason)
            return None
        return ticket

    def _connect(self, ticket: pb.TransferTicket) -> socket.socket | None:
        host = self._link.target.host.strip("[]")
        try:
            raw = socket.create_connection((host, ticket.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            self._turn_off(f"cannot connect to {host}:{ticket.port} ({exc})")
            return None
        raw.settimeout(IO_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not ticket.tls:
            return raw
        try:
            return self._tls_context().wrap_socket(raw, server_hostname=host)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            self._turn_off(f"TLS with {host}:{ticket.port} failed ({exc})")
            return None

    def _tls_context(self) -> ssl.SSLContext:
        """Trust what the gRPC channel trusts: the client's CA file, else the system store."""
        from scaleout.client.tls import grpc_root_certificates

        roots = grpc_root_certificates(self._link.target.root_cert_path)
        if roots is not None:
            return ssl.create_default_context(cadata=roots.decode("ascii", "replace"))
        return ssl.create_default_context(cafile=os.environ.get("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH") or None)

    def _turn_off(self, why: str) -> None:
        if self._off_generation != self._link.generation:
            logger.warning("byte path not used: %s; models move over gRPC until the channel is rebuilt", why)
        self._off_generation = self._link.generation


def _parse_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError as exc:
        raise bytepath.ProtocolError(f"not a size: {text[:40]!r}") from exc
    if size < 0:
        raise bytepath.ProtocolError(f"negative size {size}")
    return size


# what a transfer can fail with on the wire (ProtocolError is a ConnectionError, so an OSError)
TRANSFER_ERRORS = (OSError, ssl.SSLError, bytepath.TransferRefused)


def _failure(what: str, exc: BaseException) -> ByteTransferFailed:
    """A refusal keeps the combiner's verdict on retrying; a broken connection is always worth a retry."""
    if isinstance(exc, bytepath.TransferRefused):
        return ByteTransferFailed(f"{what} refused by the combiner: {exc}", retryable=exc.retryable)
    return ByteTransferFailed(f"{what} interrupted: {exc}", retryable=True)
