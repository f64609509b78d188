"""The byte path: large models over a TCP port beside gRPC, negotiated by our client, with every check of
the gRPC path (tickets behind the token gate, size limit, checksum, container, durability) and a fallback
to gRPC wherever it cannot be used."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from scaleout.client.connection import ClientIdentity, CombinerError, Connection, GrpcTarget
from scaleout_server.combiner.server import updates_dir_for
from scaleoututil import bytepath
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.model import ScaleoutModel
from tests.unit.test_combiner_support import SEED_ID, Harness, running_harness

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A combiner whose byte path takes models of every size (the default threshold is 16 MiB)."""
    with running_harness(tmp_path, byte_path_min_bytes=0) as h:
        yield h


@pytest.fixture
def connection(harness: Harness) -> Iterator[Connection]:
    conn = Connection(GrpcTarget("127.0.0.1", harness.port), ClientIdentity("c1", "c1"))
    yield conn
    conn.close()


def big_model(model_id: str | None = None, mib: int = 3, seed: int = 0) -> ScaleoutModel:
    """Random float32 parameters (nothing compresses), over the 1 MiB chunk and 32 MiB window sizes as asked."""
    params = [np.random.default_rng(seed).standard_normal(mib * MIB // 4, dtype=np.float32)]
    return ScaleoutModel.from_model_params(params, "numpyhelper", model_id=model_id or str(uuid.uuid4()))


def served(harness: Harness) -> dict[str, int]:
    assert harness.combiner.server.byte_path is not None
    return dict(harness.combiner.server.byte_path.served)


def ticket(harness: Harness, direction: str, model_id: str, size: int = 0,
           digests: tuple[str, ...] = ()) -> pb.TransferTicket:
    """A ticket as a peer offering `digests` asks for it (none: an older peer, which gets SHA-256)."""
    stub = pb_grpc.ModelServiceStub(harness.channel)
    return stub.OpenTransfer(pb.TransferOffer(direction=direction, model_id=model_id, size=size,
                                              digests=list(digests)),
                             metadata=(("client-id", "raw"),), timeout=5)


def raw_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


# ---- the happy paths -----------------------------------------------------------------------------------
def test_a_model_downloads_over_the_byte_path_with_its_checksum_verified(harness: Harness,
                                                                        connection: Connection) -> None:
    model = big_model("bp-down", mib=40)  # more than one 32 MiB window
    harness.repository.put("models", "bp-down", model.get_stream())
    got = connection.download_model("bp-down")
    assert got.checksum == model.checksum
    assert np.array_equal(got.get_model_params("numpyhelper")[0], model.get_model_params("numpyhelper")[0])
    assert served(harness) == {"download": 1, "upload": 0}


def test_an_update_uploads_over_the_byte_path_and_is_kept_durably_under_its_id(harness: Harness,
                                                                             connection: Connection) -> None:
    model = big_model(mib=3)
    connection.upload_model(model)  # no checksum computed beforehand: it is hashed while it is sent
    kept = updates_dir_for(harness.combiner.settings) / f"{model.model_id}.scm"
    assert kept.read_bytes() == model.get_stream().read()
    assert served(harness) == {"download": 0, "upload": 1}
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no partial file left


def test_models_under_the_threshold_stay_on_grpc(tmp_path: Path) -> None:
    with running_harness(tmp_path) as harness:  # default: 16 MiB
        conn = Connection(GrpcTarget("127.0.0.1", harness.port), ClientIdentity("c1", "c1"))
        try:
            model = big_model(mib=1)
            conn.upload_model(model)
            assert conn.download_model(SEED_ID).model_id == SEED_ID
            assert (updates_dir_for(harness.combiner.settings) / f"{model.model_id}.scm").exists()
        finally:
            conn.close()
        assert served(harness) == {"download": 0, "upload": 0}
        assert ticket(harness, "upload", "x", 16 * MIB).ticket  # and at the threshold a ticket is given


# ---- fallbacks -----------------------------------------------------------------------------------------
def test_a_combiner_with_the_byte_path_off_serves_every_transfer_over_grpc(tmp_path: Path) -> None:
    with running_harness(tmp_path, byte_port=-1, byte_path_min_bytes=0) as harness:
        assert harness.combiner.server.byte_path is None
        answer = ticket(harness, "download", SEED_ID)
        assert answer.ticket == "" and "off" in answer.reason
        conn = Connection(GrpcTarget("127.0.0.1", harness.port), ClientIdentity("c1", "c1"))
        try:
            model = big_model(mib=2)
            conn.upload_model(model)
            assert conn.download_model(SEED_ID).model_id == SEED_ID
        finally:
            conn.close()
        assert (updates_dir_for(harness.combiner.settings) / f"{model.model_id}.scm").exists()


def test_an_unreachable_byte_port_falls_back_to_grpc_until_the_channel_is_rebuilt(
        harness: Harness, connection: Connection, caplog: pytest.LogCaptureFixture) -> None:
    byte_path = harness.combiner.server.byte_path
    assert byte_path is not None
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    real_port, byte_path.port = byte_path.port, closed.getsockname()[1]  # tickets now name a closed port
    closed.close()
    try:
        with caplog.at_level(logging.WARNING):
            model = big_model(mib=2)
            connection.upload_model(model)
            assert connection.download_model(SEED_ID).model_id == SEED_ID
        assert sum("byte path not used" in r.getMessage() for r in caplog.records) == 1  # said once
        assert not connection.byte_path.usable
        byte_path.port = real_port
        connection.reconnect()  # a new channel tries the byte path again
        assert connection.byte_path.usable
        connection.download_model(SEED_ID)
    finally:
        byte_path.port = real_port
    assert (updates_dir_for(harness.combiner.settings) / f"{model.model_id}.scm").exists()
    assert served(harness) == {"download": 1, "upload": 0}


def test_the_switch_in_the_environment_keeps_a_client_on_grpc(harness: Harness,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_BYTE_PATH", "off")
    conn = Connection(GrpcTarget("127.0.0.1", harness.port), ClientIdentity("c1", "c1"))
    try:
        conn.download_model(SEED_ID)
    finally:
        conn.close()
    assert served(harness) == {"download": 0, "upload": 0}


# ---- interrupted transfers -----------------------------------------------------------------------------
class CuttingProxy:
    """Forwards connections to `port`; the first `cuts` of them are cut after `after` bytes from the server
    (or, with `upstream`, from the client)."""

    def __init__(self, port: int, after: int, cuts: int = 1, upstream: bool = False) -> None:
        self.target, self.after, self.cuts, self.upstream = port, after, cuts, upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.after if self.connections <= self.cuts else None
            up = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(down, up, limit if self.upstream else None),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, None if self.upstream else limit),
                             daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        moved = 0
        try:
            while data := src.recv(65536):
                if limit is not None and moved + len(data) > limit:
                    dst.sendall(data[: limit - moved])
                    break
                dst.sendall(data)
                moved += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_download_cut_half_way_is_retried_and_arrives_whole(harness: Harness, connection: Connection) -> None:
    model = big_model("bp-cut", mib=4)
    harness.repository.put("models", "bp-cut", model.get_stream())
    byte_path = harness.combiner.server.byte_path
    assert byte_path is not None
    proxy = CuttingProxy(byte_path.port, after=2 * MIB)
    real_port, byte_path.port = byte_path.port, proxy.port
    try:
        got = connection.download_model("bp-cut")
    finally:
        byte_path.port = real_port
        proxy.close()
    assert got.checksum == model.checksum
    assert proxy.connections == 2


def test_an_upload_cut_half_way_by_the_network_is_retried_by_the_client(harness: Harness,
                                                                        connection: Connection) -> None:
    model = big_model(mib=4)
    byte_path = harness.combiner.server.byte_path
    assert byte_path is not None
    proxy = CuttingProxy(byte_path.port, after=2 * MIB, upstream=True)
    real_port, byte_path.port = byte_path.port, proxy.port
    try:
        connection.upload_model(model)
    finally:
        byte_path.port = real_port
        proxy.close()
    updates = updates_dir_for(harness.combiner.settings)
    assert proxy.connections == 2
    assert [p.name for p in updates.iterdir()] == [f"{model.model_id}.scm"]
    assert (updates / f"{model.model_id}.scm").read_bytes() == model.get_stream().read()


def test_an_upload_cut_half_way_leaves_nothing_and_the_retry_is_kept(harness: Harness) -> None:
    model = big_model(mib=4)
    offer = ticket(harness, "upload", model.model_id, model.size)
    with raw_socket(offer.port) as sock:  # half the bytes, then the client dies
        bytepath.send_line(sock, f"{bytepath.PROTOCOL} {offer.ticket}")
        assert bytepath.read_line(sock) == "GO"
        sock.sendall(model.get_stream().read(model.size // 2))
    updates = updates_dir_for(harness.combiner.settings)
    conn = Connection(GrpcTarget("127.0.0.1", harness.port), ClientIdentity("c1", "c1"))
    try:
        conn.upload_model(model)
    finally:
        conn.close()
    assert [p.name for p in updates.iterdir()] == [f"{model.model_id}.scm"]
    assert (updates / f"{model.model_id}.scm").read_bytes() == model.get_stream().read()


# ---- bad input -----------------------------------------------------------------------------------------
def upload_raw(harness: Harness, model_id: str, body: bytes, trailer: str, digests: tuple[str, ...] = ()) -> str:
    offer = ticket(harness, "upload", model_id, len(body), digests)
    with raw_socket(offer.port) as sock:
        bytepath.send_line(sock, f"{bytepath.PROTOCOL} {offer.ticket}")
        assert bytepath.read_line(sock) == "GO"
        sock.sendall(body)
        bytepath.send_line(sock, trailer)
        return bytepath.read_line(sock)


def test_an_upload_with_a_wrong_checksum_is_data_loss_and_leaves_nothing(harness: Harness) -> None:
    model = big_model(mib=1)
    answer = upload_raw(harness, model.model_id, model.get_stream().read(), "SHA256 " + "0" * 64)
    assert answer.startswith("ERR DATA_LOSS checksum mismatch")
    assert list(updates_dir_for(harness.combiner.settings).iterdir()) == []


def test_an_upload_that_is_no_container_or_names_another_model_is_invalid_argument(harness: Harness) -> None:
    raw = b"not a model at all" * 1000
    answer = upload_raw(harness, "raw", raw, f"SHA256 {hashlib.sha256(raw).hexdigest()}")
    assert answer.startswith("ERR INVALID_ARGUMENT upload is not a model container")
    inside = big_model("inside", mib=1)
    answer = upload_raw(harness, "outside", inside.get_stream().read(), f"SHA256 {inside.checksum}")
    assert answer.startswith("ERR INVALID_ARGUMENT") and "'inside'" in answer
    assert list(updates_dir_for(harness.combiner.settings).iterdir()) == []


def test_an_upload_over_the_size_limit_is_refused_before_a_byte_is_sent(harness: Harness,
                                                                       connection: Connection) -> None:
    harness.combiner.server.model_service.max_model_bytes = MIB
    model = big_model(mib=2)
    with pytest.raises(grpc.RpcError) as err:
        ticket(harness, "upload", model.model_id, model.size)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_model_bytes" in err.value.details()
    with pytest.raises(CombinerError, match="max_model_bytes"):
        connection.upload_model(model)
    assert served(harness) == {"download": 0, "upload": 0}


def test_the_checksum_algorithm_is_the_first_the_client_offers_that_the_combiner_has(harness: Harness) -> None:
    """BLAKE3 when both ends have it (our client offers it first), SHA-256 for peers that offer nothing
    or nothing the combiner knows; the trailer names the agreed algorithm and carries its digest."""
    import blake3

    with harness.repository.open("models", SEED_ID) as fh:
        stored = fh.read()
    cases = (((), "SHA256", hashlib.sha256(stored).hexdigest()),
             (("MD5", "sha256"), "SHA256", hashlib.sha256(stored).hexdigest()),
             (("BLAKE3", "SHA256"), "BLAKE3", blake3.blake3(stored).hexdigest()))
    for offered, agreed, expected in cases:
        offer = ticket(harness, "download", SEED_ID, digests=offered)
        assert (offer.digest or "SHA256") == agreed
        with raw_socket(offer.port) as sock:
            bytepath.send_line(sock, f"{bytepath.PROTOCOL} {offer.ticket}")
            size = int(bytepath.expect(bytepath.read_line(sock), "OK"))
            body = b""
            while len(body) < size:
                body += sock.recv(size - len(body))
            assert body == stored
            trailer = bytepath.read_line(sock)
            assert trailer.split()[0] == agreed and bytepath.parse_checksum(trailer, agreed) == expected
    model = big_model(mib=1)
    body = model.get_stream().read()
    answer = upload_raw(harness, model.model_id, body, "BLAKE3 " + blake3.blake3(body[:-1]).hexdigest(),
                        ("BLAKE3",))
    assert answer.startswith("ERR DATA_LOSS checksum mismatch") and "blake3" in answer
    answer = upload_raw(harness, model.model_id, body, f"SHA256 {model.checksum}", ("BLAKE3",))
    assert answer.startswith("ERR ") and "expected 'BLAKE3'" in answer  # the trailer must use the agreed one
    assert list(updates_dir_for(harness.combiner.settings).iterdir()) == []
    assert upload_raw(harness, model.model_id, body, "BLAKE3 " + blake3.blake3(body).hexdigest(),
                      ("BLAKE3",)).startswith("OK")


def test_an_upload_whose_sha256_is_known_offers_it_first_so_the_client_hashes_nothing_again(
        harness: Harness, connection: Connection) -> None:
    offers: list[list[str]] = []
    stub = connection.byte_path._link.models
    real = stub.OpenTransfer

    def recording(offer: pb.TransferOffer, **kw: object) -> pb.TransferTicket:
        offers.append(list(offer.digests))
        return real(offer, **kw)

    stub.OpenTransfer = recording
    fresh, known = big_model(mib=1, seed=1), big_model(mib=1, seed=2)
    _ = known.checksum
    connection.upload_model(fresh)
    connection.upload_model(known)
    assert offers == [["BLAKE3", "SHA256"], ["SHA256", "BLAKE3"]]
    updates = updates_dir_for(harness.combiner.settings)
    for model in (fresh, known):
        assert (updates / f"{model.model_id}.scm").read_bytes() == model.get_stream().read()


def test_tickets_are_single_use_and_unknown_ones_are_refused(harness: Harness) -> None:
    offer = ticket(harness, "download", SEED_ID)
    for attempt in range(2):
        with raw_socket(offer.port) as sock:
            bytepath.send_line(sock, f"{bytepath.PROTOCOL} {offer.ticket}")
            line = bytepath.read_line(sock)
            if attempt == 0:
                size = int(bytepath.expect(line, "OK"))
                body = b""
                while len(body) < size:
                    body += sock.recv(size - len(body))
                with harness.repository.open("models", SEED_ID) as fh:
                    stored = fh.read()
                assert body == stored
                assert bytepath.parse_checksum(bytepath.read_line(sock)) == hashlib.sha256(stored).hexdigest()
            else:
                assert line.startswith("ERR UNAUTHENTICATED unknown, used or expired ticket")
    with raw_socket(offer.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert bytepath.read_line(sock).startswith("ERR INVALID_ARGUMENT expected 'SCALEOUT-BYTES/1 <ticket>'")


def test_offers_with_bad_fields_are_invalid_argument_and_unknown_models_not_found(harness: Harness) -> None:
    for direction, model_id, size in (("sideways", "m", 0), ("download", "../etc", 0), ("upload", "m", -1)):
        with pytest.raises(grpc.RpcError) as err:
            ticket(harness, direction, model_id, size)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        ticket(harness, "download", "no-such-model")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_memory_stays_flat_in_the_model_size_at_both_ends(harness: Harness, connection: Connection) -> None:
    """Client and combiner (one process here) allocate their fixed buffers (4 x 4 MiB) for a 48 MiB model each way,
    never the model."""
    import tracemalloc

    model = big_model("bp-flat", mib=48)
    harness.repository.put("models", "bp-flat", model.get_stream())
    _ = model.checksum
    tracemalloc.start()
    try:
        connection.download_model("bp-flat").close()
        connection.upload_model(model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert served(harness) == {"download": 1, "upload": 1}
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB traced for a 48 MiB model"
