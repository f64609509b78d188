"""Fuzzing every gRPC service of a real combiner process from the protobuf descriptors themselves.

The strategies are not hand-picked cases: `message_strategy` walks each request message's descriptor in
scaleoututil/grpc/scaleout_pb2.py and draws every field by its type (integers over the type's whole range,
floats with NaN and infinities, text, JSON and broken JSON in strings, bytes, unknown enum numbers, nested
and repeated messages, maps), with the metadata a client sends (a known client id, a random one, none).
Each method is called with what hypothesis draws, streams with several messages.

Whatever arrives, the call must end with a proper gRPC status (never UNKNOWN or INTERNAL, which are what an
unhandled exception becomes), the combiner process must keep running and serving, the stored state must be
intact (the same models byte for byte; no update, validation, prediction, session or round appearing: the
fuzzer was never given a task) and afterwards a real client must
still train a round on that combiner.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaleoututil.grpc import scaleout_pb2 as pb
from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

EXAMPLES = 15  # per method
CLIENT_ID = "fuzz-client"
HELD_DEADLINE_S = 0.5  # polls and TaskStream are held open by design, round calls wait: cut them short
UNARY_DEADLINE_S = 2.0
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=3), max_leaves=8)
# strings: free text, JSON documents, broken JSON, and values the combiner knows (ids, task types)
_strings = st.one_of(
    st.text(max_size=40), _json.map(json.dumps), st.sampled_from(["", "[[[", "{", "null", '{"a": ', "NaN", "\x00"]),
    st.sampled_from([CLIENT_ID, "seed", "MODEL_UPDATE", "MODEL_VALIDATION", "Custom_echo", "download", "upload",
                     '{"training_metadata": {"num_examples": -1}}', '{"num_examples": "x"}']),
)


def scalar_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, -1 if low < 0 else 1]))
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300) | _strings.map(lambda s: s.encode("utf-8", "surrogatepass"))
    if kind == FieldDescriptor.TYPE_ENUM:  # proto3 enums are open: unknown numbers arrive too
        return st.sampled_from([v.number for v in field.enum_type.values]) | st.integers(-3, 1000)
    raise AssertionError(f"field {field.full_name}: no strategy for protobuf type {kind}")


def field_strategy(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(scalar_strategy(key), field_strategy(value, depth + 1), max_size=3)
    one = message_strategy(field.message_type, depth + 1) if field.message_type is not None else scalar_strategy(field)
    return st.lists(one, max_size=3) if field.is_repeated else one


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """A message of this type with any subset of its fields set, each drawn by `field_strategy`."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    optional = {f.name: field_strategy(f, depth) for f in descriptor.fields}
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: cls(**kw))


_metadata = st.one_of(
    st.just((("client-id", CLIENT_ID), ("client", CLIENT_ID), ("name", CLIENT_ID))),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30).map(
        lambda cid: (("client-id", cid), ("name", cid))),
    st.just(()),
    st.tuples(st.sampled_from(["model-id", "checksum", "client-id", "grpc-fuzz"]),
              st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30)).map(
        lambda kv: ((kv[0], kv[1].strip() or "x"), ("client-id", CLIENT_ID))),
)


def rpc_call(channel: grpc.Channel, method: MethodDescriptor) -> Callable[[Any, tuple[tuple[str, str], ...]], None]:
    """A caller for `method` built from its descriptor; it drains whatever comes back (a few messages of a
    server stream, then cancels) and raises grpc.RpcError with the status the call ended with."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_cls = message_factory.GetMessageClass(method.input_type)
    reply_cls = message_factory.GetMessageClass(method.output_type)
    kinds = {(False, False): channel.unary_unary, (True, False): channel.stream_unary,
             (False, True): channel.unary_stream, (True, True): channel.stream_stream}
    stub = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=request_cls.SerializeToString, response_deserializer=reply_cls.FromString)
    held = method.server_streaming or method.name.startswith("PollAndReport") or \
        method.containing_service.name == "Control"
    deadline = HELD_DEADLINE_S if held else UNARY_DEADLINE_S

    def call(request: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        if not method.server_streaming:
            stub(iter(request) if method.client_streaming else request, metadata=metadata, timeout=deadline)
            return
        replies = stub(iter(request) if method.client_streaming else request, metadata=metadata, timeout=deadline)
        for n, _ in enumerate(replies):
            if n >= 5:
                replies.cancel()  # type: ignore[attr-defined]
                break

    return call


def explore(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int) -> None:
    """Call `check` on `examples` values hypothesis draws from `strategy` (the same ones every run)."""
    @given(strategy)
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(value: Any) -> None:
        check(value)

    run()


def all_methods() -> list[MethodDescriptor]:
    return [m for service in pb.DESCRIPTOR.services_by_name.values() for m in service.methods]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Path]]:
    dep = Deployment(tmp_path_factory.mktemp("grpc-fuzz"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server()
        project = dep.project("weighted")
        dep.upload_seed(project)
        yield dep, project


def model_digests(dep: Deployment) -> dict[str, str]:
    """What the fuzzing must not change: every stored model, with the SHA-256 of its bytes."""
    out = {}
    for m in dep.get("/api/v1/models/", headers={"X-Limit": "1000"})["result"]:
        r = requests.get(f"{dep.api_url}/api/v1/models/{m['model_id']}/download", timeout=30,
                         headers=dep.auth_headers())
        assert r.status_code == 200, r.text
        out[m["model_id"]] = hashlib.sha256(r.content).hexdigest()
    return out


def stored_state(dep: Deployment) -> dict[str, Any]:
    """Every model byte for byte, and how many records there are of the kinds that only answer a task the
    combiner issued (the fuzzer was never given one, so none may appear) or that only an admin starts."""
    kinds = ("updates", "validations", "predictions", "sessions", "rounds")
    return {"models": model_digests(dep), **{k: dep.get(f"/api/v1/{k}/")["count"] for k in kinds}}


def test_every_grpc_method_answers_a_proper_status_to_messages_drawn_from_its_descriptor(
        fuzzed: tuple[Deployment, Path]) -> None:
    dep, project = fuzzed
    server = next(p for p in dep.procs if p.name == "server")
    before = stored_state(dep)
    bad: list[str] = []
    calls = 0
    with grpc.insecure_channel(f"127.0.0.1:{dep.combiner_port}") as channel:
        for method in all_methods():
            call = rpc_call(channel, method)
            request = message_strategy(method.input_type)
            requests_ = st.lists(request, max_size=4) if method.client_streaming else request

            def fuzz(drawn: tuple[Any, tuple[tuple[str, str], ...]], call: Any = call,
                     method: MethodDescriptor = method) -> None:
                nonlocal calls
                message, metadata = drawn
                calls += 1
                try:
                    call(message, metadata)
                except grpc.RpcError as err:
                    code = err.code()  # type: ignore[attr-defined]
                    if code in FORBIDDEN or (code == grpc.StatusCode.UNAVAILABLE and server.popen.poll() is not None):
                        bad.append(f"{method.full_name} -> {code.name}: {err.details()}\n  "  # type: ignore[attr-defined]
                                   f"request: {str(message)[:300]!r} metadata: {metadata}")
                assert server.popen.poll() is None, f"the server process died on {method.full_name}: {message}"

            started = time.monotonic()
            explore(st.tuples(requests_, _metadata), fuzz, EXAMPLES)
            print(f"[grpc-fuzz] {method.full_name}: {time.monotonic() - started:.1f}s")
    assert calls >= EXAMPLES * len(all_methods()) // 2
    assert not bad, f"{len(bad)} calls ended UNKNOWN/INTERNAL:\n" + "\n".join(sorted(set(bad))[:15])

    # the combiner keeps serving and nothing stored was changed
    assert stored_state(dep) == before
    dep.start_client("after-fuzz", project, env={"E2E_CONSTANT": "1", "E2E_NUM_EXAMPLES": "1"})
    session_id = dep.start_session(rounds=1, round_timeout=30, validate=False)
    session = dep.wait_session(session_id, timeout=90)
    assert session["status"] == "Finished", session
    assert [r["status"] for r in dep.rounds(session_id)] == ["Finished"]


def test_the_strategies_cover_every_field_of_every_request_message() -> None:
    """Each request type's strategy can set each of its fields (hypothesis draws them all eventually)."""
    for method in all_methods():
        descriptor = method.input_type
        seen: set[str] = set()

        def draw(message: Any, seen: set[str] = seen) -> None:
            message.SerializeToString()  # every drawn message is encodable
            seen.update(f.name for f, _ in message.ListFields())

        explore(message_strategy(descriptor), draw, 40)
        wanted = {f.name for f in descriptor.fields}
        assert seen == wanted, (descriptor.name, wanted - seen)
