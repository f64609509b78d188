"""The combiner's end of the byte path: a TCP (or TLS) listener beside the gRPC port for large models.

Why: see scaleoututil/bytepath.py. Here the kernel copies a download from the stored file to the socket
(sendfile) and an upload from the socket into the update file (hashed by a second thread), and no byte
crosses the event loop that serves every client's polls. Each connection runs in a thread of its own;
the event loop only issues tickets (`ModelService.OpenTransfer`, behind the same token checks as every
RPC), so the byte path keeps every check of the gRPC path: tokens (a ticket is single-use, bound to
one client, direction and model, and expires), TLS with the combiner's certificate, the model size
limit (checked against the offered size, which is then the exact length read), the checksum and the
container check, and durability before the acknowledgement.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleout_server.combiner.upload_checks import UploadRejected, finish_upload
from scaleout_server.repository.base import BlobNotFound, ModelRepository
from scaleoututil import bytepath
from scaleoututil.checksum import SHA256

log = logging.getLogger(__name__)

TICKET_SECONDS = 120.0  # a ticket not used within this is refused (the client asks again)
TICKETS_KEPT = 20_000  # outstanding tickets; the oldest are dropped beyond this
MAX_CONNECTIONS = 64  # transfers served at once; more are refused with UNAVAILABLE (the client retries)
IO_TIMEOUT = 120.0  # seconds a connection may stall before it is dropped
DIGEST_TIMEOUT = 600.0  # seconds a download waits for the stored model's checksum at its end


@dataclass(frozen=True)
class Ticket:
    """One granted transfer. `digest` (downloads) resolves to the stored model's ModelDigest."""

    direction: str
    model_id: str
    client_id: str
    size: int
    expires: float
    digest: concurrent.futures.Future[Any] | None = None
    algorithm: str = SHA256  # the checksum algorithm agreed in OpenTransfer


class BytePathServer:
    """Listens on `host:port` (0: a free port); `start()` returns the bound port, `stop()` closes it."""

    def __init__(self, host: str, port: int, repository_of: Callable[[], ModelRepository | None],
                 updates_dir: Path, tls: ssl.SSLContext | None = None, min_bytes: int = 0) -> None:
        self.host = host
        self.min_bytes = min_bytes  # smaller models get no ticket: they stay on gRPC
        self.requested_port = port
        self.port = 0
        self.tls = tls
        self.repository_of = repository_of
        self.updates_dir = updates_dir
        self._tickets: OrderedDict[str, Ticket] = OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.served = {"download": 0, "upload": 0}  # transfers completed (tests, diagnostics)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> int:
        family = socket.AF_INET6 if ":" in self.host.strip("[]") else socket.AF_INET
        host = self.host.strip("[]") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, self.requested_port))
        except OSError as exc:
            listener.close()
            raise RuntimeError(f"the byte path cannot listen on {host}:{self.requested_port}: {exc.strerror}; "
                               "choose another --byte-port (0 picks a free one, -1 turns it off)") from exc
        listener.listen(256)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="bytepath-accept", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._closing.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- tickets (issued on the event loop, used by connection threads) -------------------------
    def issue(self, direction: str, model_id: str, client_id: str, size: int,
              digest: concurrent.futures.Future[Any] | None = None, algorithm: str = SHA256) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            while self._tickets:
                oldest = next(iter(self._tickets.values()))
                if oldest.expires > now and len(self._tickets) < TICKETS_KEPT:
                    break
                self._tickets.popitem(last=False)
            self._tickets[token] = Ticket(direction, model_id, client_id, size, now + TICKET_SECONDS, digest,
                                          algorithm)
        return token

    def _redeem(self, token: str) -> Ticket | None:
        with self._lock:
            ticket = self._tickets.pop(token, None)
        if ticket is None or ticket.expires < time.monotonic():
            return None
        return ticket

    # -- connections ----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.05)  # e.g. out of descriptors: try again shortly
                continue
            if not self._slots.acquire(blocking=False):
                threading.Thread(target=self._refuse_busy, args=(conn,), daemon=True).start()
                continue
            threading.Thread(target=self._serve, args=(conn, peer), name="bytepath-conn", daemon=True).start()

    def _refuse_busy(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                sock = self._wrap(conn)
                bytepath.read_line(sock)
                bytepath.send_line(sock, bytepath.error_line(
                    "UNAVAILABLE", f"the combiner is serving {MAX_CONNECTIONS} transfers; try again shortly"))
            except (OSError, bytepath.ProtocolError):
                pass

    def _wrap(self, conn: socket.socket) -> socket.socket:
        return self.tls.wrap_socket(conn, server_side=True) if self.tls is not None else conn

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        try:
            conn.settimeout(IO_TIMEOUT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._wrap(conn) as sock:
                line = bytepath.read_line(sock)
                word, _, token = line.partition(" ")
                if word != bytepath.PROTOCOL:
                    bytepath.send_line(sock, bytepath.error_line(
                        "INVALID_ARGUMENT", f"expected '{bytepath.PROTOCOL} <ticket>'; ask for a ticket with "
                        "ModelService.OpenTransfer"))
                    return
                ticket = self._redeem(token.strip())
                if ticket is None:
                    bytepath.send_line(sock, bytepath.error_line(
                        "UNAUTHENTICATED", "unknown, used or expired ticket; ask for a new one with "
                        "ModelService.OpenTransfer"))
                    return
                if ticket.direction == "download":
                    self._download(sock, ticket)
                else:
                    self._upload(sock, ticket)
        except (OSError, bytepath.ProtocolError, ssl.SSLError) as exc:
            log.info("byte path transfer with %s ended early: %s", peer, exc)
        finally:
            conn.close()
            self._slots.release()

    def _download(self, sock: socket.socket, ticket: Ticket) -> None:
        repository = self.repository_of()
        try:
            if repository is None:
                raise OSError("no model repository yet")
            stream = repository.open("models", ticket.model_id)
        except BlobNotFound:
            bytepath.send_line(sock, bytepath.error_line("NOT_FOUND", f"model {ticket.model_id} not found"))
            return
        except OSError as exc:
            bytepath.send_line(sock, bytepath.error_line(
                "UNAVAILABLE", f"combiner cannot read model {ticket.model_id} now: {exc}"))
            return
        try:
            bytepath.send_line(sock, f"OK {ticket.size}")
            bytepath.send_file(sock, stream, ticket.size, hash_it=False)
        finally:
            stream.close()
        assert ticket.digest is not None
        try:
            digest = ticket.digest.result(timeout=DIGEST_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure to hash is the client's retry
            bytepath.send_line(sock, bytepath.error_line("UNAVAILABLE", f"could not checksum model "
                                                         f"{ticket.model_id}: {exc}"))
            return
        if digest.size != ticket.size:
            bytepath.send_line(sock, bytepath.error_line("UNAVAILABLE", f"model {ticket.model_id} changed while "
                                                         "being sent; download it again"))
            return
        self.served["download"] += 1
        bytepath.send_line(sock, bytepath.checksum_line(digest.checksum if digest.container else None,
                                                        ticket.algorithm))
        log.debug("model %s sent to %s over the byte path (%d bytes)", ticket.model_id, ticket.client_id,
                  ticket.size)

    def _upload(self, sock: socket.socket, ticket: Ticket) -> None:
        self.updates_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.updates_dir / f".{ticket.model_id}.{uuid.uuid4().hex[:8]}.part"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            bytepath.send_line(sock, bytepath.error_line("UNAVAILABLE", f"combiner cannot store the upload now: "
                                                         f"{exc}"))
            return
        try:
            try:
                bytepath.send_line(sock, "GO")
                received = bytepath.receive_to_file(sock, fd, ticket.size, ticket.algorithm)
            finally:
                os.close(fd)
            try:
                announced = bytepath.parse_checksum(bytepath.read_line(sock), ticket.algorithm)
            except (bytepath.ProtocolError, bytepath.TransferRefused) as exc:
                answer = bytepath.error_line("INVALID_ARGUMENT", f"bad checksum trailer after the bytes: {exc}")
            else:
                answer = self._commit(tmp, ticket, received, announced)
        finally:
            tmp.unlink(missing_ok=True)  # before the answer: a refused upload leaves nothing behind
        bytepath.send_line(sock, answer)

    def _commit(self, tmp: Path, ticket: Ticket, received: str, announced: str | None) -> str:
        """The answer line for a fully received upload, after the checks shared with the gRPC path."""
        try:
            finish_upload(tmp, self.updates_dir, ticket.model_id, received, announced or "", ticket.size,
                          ticket.algorithm)
        except UploadRejected as exc:
            log.warning("upload of %r from client %s rejected: %s", ticket.model_id, ticket.client_id, exc)
            return bytepath.error_line(exc.code.name, str(exc))
        except OSError as exc:  # disk full and the like: the client retries
            log.error("upload of %r from client %s could not be stored: %s", ticket.model_id, ticket.client_id,
                      exc)
            return bytepath.error_line("UNAVAILABLE", f"combiner cannot store the upload now: {exc}")
        log.info("model update %s received from client %s over the byte path (%d bytes)", ticket.model_id,
                 ticket.client_id, ticket.size)
        self.served["upload"] += 1
        return f"OK model {ticket.model_id} received"


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS for the byte path with the certificate the combiner presents on its gRPC port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
