"""KVEventPublisher read by a real consumer: pyzmq sockets and msgspec with vLLM's published
KV-event schema, decoded in strict mode, in both encodings vLLM has used."""

from __future__ import annotations

import random
import threading
import time

import msgspec
import pytest
import zmq

from llmds.kv_block_manager import KVBlockManager
from llmds.routing import HAS_ZMQ, KVEventPublisher, KVIndexer, decode_kv_event_batch

if not HAS_ZMQ:  # pragma: no cover - CI builds with ZeroMQ and fails on any skip
    pytest.skip("llmds was built without ZeroMQ", allow_module_level=True)


# vLLM's KV-event schema, as its vllm/distributed/kv_events.py defines it: the current one, whose
# structs encode as maps (an event's tag under "type"), and the earlier array_like one.
class Batch(msgspec.Struct, omit_defaults=True):
    ts: float
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]
    data_parallel_rank: int | None = None


class Event(msgspec.Struct, omit_defaults=True, tag=True):
    pass


class BlockStored(Event):
    block_hashes: list[bytes | int]
    parent_block_hash: bytes | int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[tuple | None] | None = None
    group_idx: int | None = None


class BlockRemoved(Event):
    block_hashes: list[bytes | int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(Event):
    pass


class ArrayBatch(msgspec.Struct, array_like=True, omit_defaults=True):
    ts: float
    events: list[ArrayBlockStored | ArrayBlockRemoved | ArrayAllBlocksCleared]
    data_parallel_rank: int | None = None


class ArrayEvent(msgspec.Struct, array_like=True, omit_defaults=True, tag=True):
    pass


class ArrayBlockStored(ArrayEvent, tag="BlockStored"):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None


class ArrayBlockRemoved(ArrayEvent, tag="BlockRemoved"):
    block_hashes: list[int]
    medium: str | None


class ArrayAllBlocksCleared(ArrayEvent, tag="AllBlocksCleared"):
    pass


SCHEMAS = {"map": Batch, "array": ArrayBatch}
VLLM_MEDIUM = {"GPU": "primary", "CPU": "host", "DISK": "disk", "REMOTE": "remote"}


def as_dict(event: msgspec.Struct) -> dict:
    """A decoded vLLM event in the shape KVBlockManager.subscribe delivers."""
    name = type(event).__name__.removeprefix("Array")
    if name == "AllBlocksCleared":
        return {"type": name}
    out = {"type": name, "block_hashes": event.block_hashes}
    if name == "BlockStored":
        out.update(parent_block_hash=event.parent_block_hash, token_ids=event.token_ids, block_size=event.block_size)
    out["medium"] = VLLM_MEDIUM[event.medium]
    return out


def serve(m: KVBlockManager, keys: list[int]) -> None:
    blocks = m.onboard(m.match(keys))
    fresh = m.allocate(len(keys) - len(blocks))
    m.register_blocks(fresh, keys[len(blocks):], keys[len(blocks) - 1] if blocks else None)
    m.release((blocks + fresh)[::-1])


def seq_of(frame: bytes) -> int:
    return int.from_bytes(frame, "big", signed=True)


class Subscriber:
    """A router's side of the stream: SUB for live batches, DEALER for replays."""

    def __init__(self, publisher: KVEventPublisher) -> None:
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 0)
        self.sub.connect(publisher.endpoint.replace("0.0.0.0", "127.0.0.1"))
        self.replay_endpoint = (publisher.replay_endpoint or "").replace("0.0.0.0", "127.0.0.1")

    def receive(self, timeout_ms: int = 10_000) -> tuple[int, bytes] | None:
        if not self.sub.poll(timeout_ms):
            return None
        topic, seq, payload = self.sub.recv_multipart()
        assert topic == b""
        return seq_of(seq), payload

    def join(self, publisher: KVEventPublisher, manager: KVBlockManager) -> tuple[int, bytes]:
        """Publishes probe batches until the subscription has reached the publisher."""
        for probe in range(1000):
            serve(manager, [10**12 + probe])
            publisher.flush()
            got = self.receive(timeout_ms=50)
            if got is not None:
                return got
        raise AssertionError("the subscriber never received a batch")

    def replay(self, start: int) -> list[tuple[int, bytes]]:
        dealer = self.context.socket(zmq.DEALER)
        dealer.connect(self.replay_endpoint)
        dealer.send_multipart([b"", start.to_bytes(8, "big")])
        out = []
        while True:
            assert dealer.poll(10_000), "no end marker"
            empty, seq, payload = dealer.recv_multipart()
            assert empty == b""
            if seq_of(seq) == -1:
                assert payload == b""
                break
            out.append((seq_of(seq), payload))
        dealer.close(linger=0)
        return out

    def close(self) -> None:
        self.sub.close(linger=0)
        self.context.term()


def local_publisher(manager: KVBlockManager, **kwargs: object) -> KVEventPublisher:
    return KVEventPublisher(manager, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", **kwargs)


@pytest.mark.parametrize("encoding", ["map", "array"])
def test_vllms_schema_decodes_every_batch_strictly_and_says_what_the_manager_said(encoding: str) -> None:
    manager = KVBlockManager(primary_blocks=6, host_blocks=6, block_size=4)
    told: list[dict] = []
    manager.subscribe(told.append)
    decoder = msgspec.msgpack.Decoder(SCHEMAS[encoding], strict=True)
    with local_publisher(manager, encoding=encoding) as publisher:
        subscriber = Subscriber(publisher)
        received = [subscriber.join(publisher, manager)]
        first_seq = received[0][0]
        rng = random.Random(4)
        for _ in range(300):
            conv = rng.randrange(12)
            serve(manager, [conv * 100 + i for i in range(1 + rng.randrange(4))])
        manager.clear()
        publisher.flush()
        while len(received) < len(told) - first_seq:
            got = subscriber.receive()
            assert got is not None, f"stream stopped after {len(received)} batches"
            received.append(got)
        subscriber.close()
    assert [seq for seq, _ in received] == list(range(first_seq, len(told)))
    for seq, payload in received:
        batch = decoder.decode(payload)
        assert batch.data_parallel_rank == 0
        assert abs(batch.ts - time.time()) < 60
        want = told[seq]["events"]
        assert [as_dict(e) for e in batch.events] == want
        # llmds's own decoder reads the same bytes into the same dicts.
        mine = decode_kv_event_batch(payload, seq)
        assert mine["events"] == want and mine["seq"] == seq
    kinds = {type(e).__name__.removeprefix("Array") for _, p in received for e in decoder.decode(p).events}
    assert kinds == {"BlockStored", "BlockRemoved", "AllBlocksCleared"}
    assert {e["medium"] for b in told for e in b["events"] if "medium" in e} == {"primary", "host"}


def test_a_hundred_thousand_events_under_load_arrive_without_a_gap() -> None:
    manager = KVBlockManager(primary_blocks=64, host_blocks=256, block_size=16)
    decoder = msgspec.msgpack.Decoder(Batch, strict=True)
    publisher = local_publisher(manager)
    subscriber = Subscriber(publisher)
    first_seq, _ = subscriber.join(publisher, manager)
    seqs: list[int] = []
    events = 0
    done = threading.Event()

    def consume() -> None:
        nonlocal events
        while not done.is_set() or subscriber.sub.poll(0):
            got = subscriber.receive(timeout_ms=200)
            if got is not None:
                seqs.append(got[0])
                events += len(decoder.decode(got[1]).events)

    # Two producers change the cache at once while the consumer reads.
    consumer = threading.Thread(target=consume)
    consumer.start()

    def produce(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12_000):
            conv = rng.randrange(400)
            serve(manager, [seed * 10**6 + conv * 100 + i for i in range(1 + rng.randrange(6))])

    producers = [threading.Thread(target=produce, args=(s,)) for s in (1, 2)]
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    publisher.flush()
    sent = publisher.stats()
    deadline = time.time() + 60
    while len(seqs) < sent["published_batches"] - 1 - first_seq and time.time() < deadline:
        time.sleep(0.05)
    done.set()
    consumer.join()
    publisher.close()
    subscriber.close()
    assert events >= 100_000
    assert seqs == list(range(first_seq + 1, first_seq + 1 + len(seqs))), "a sequence gap"
    assert sent["lost_batches"] == 0 and sent["send_failures"] == 0
    assert len(seqs) == sent["published_batches"] - 1 - first_seq


def test_a_subscriber_that_joins_late_recovers_the_missed_batches_by_replay() -> None:
    manager = KVBlockManager(primary_blocks=8, host_blocks=8, block_size=4)
    told: list[dict] = []
    manager.subscribe(told.append)
    with local_publisher(manager, encoding="array", data_parallel_rank=None) as publisher:
        for conv in range(50):  # nobody listens yet
            serve(manager, [conv * 100, conv * 100 + 1])
        subscriber = Subscriber(publisher)
        first_seq, _ = subscriber.join(publisher, manager)
        assert first_seq > 0
        missed = subscriber.replay(0)
        assert [seq for seq, _ in missed][:first_seq] == list(range(first_seq))
        decoder = msgspec.msgpack.Decoder(ArrayBatch, strict=True)
        for seq, payload in missed[:first_seq]:
            batch = decoder.decode(payload)
            assert batch.data_parallel_rank is None
            assert [as_dict(e) for e in batch.events] == told[seq]["events"]
        assert publisher.stats()["replay_requests"] == 1
        subscriber.close()


def test_an_index_fed_over_zeromq_agrees_with_one_fed_directly() -> None:
    direct, remote = KVIndexer(), KVIndexer()
    servers = [KVBlockManager(primary_blocks=6, host_blocks=6, block_size=4) for _ in range(2)]
    publishers = [local_publisher(s) for s in servers]
    subscribers = [Subscriber(p) for p in publishers]
    starts = [sub.join(p, s)[0] for sub, p, s in zip(subscribers, publishers, servers)]
    for worker, server in enumerate(servers):
        server.subscribe(lambda b, w=worker: direct.apply(w, b))
        # What the subscriber missed before joining comes from the replay socket.
        for seq, payload in subscribers[worker].replay(0)[: starts[worker] + 1]:
            remote.apply(worker, decode_kv_event_batch(payload, seq))
    rng = random.Random(12)
    for _ in range(200):
        conv = rng.randrange(8)
        serve(servers[rng.randrange(2)], [conv * 100 + i for i in range(1 + rng.randrange(4))])
    for worker, (publisher, subscriber) in enumerate(zip(publishers, subscribers)):
        publisher.flush()
        while subscriber.sub.poll(200):
            seq, payload = subscriber.receive()
            assert remote.apply(worker, decode_kv_event_batch(payload, seq)) == "applied"
        subscriber.close()
        publisher.close()
    for conv in range(8):
        query = [conv * 100 + i for i in range(4)]
        direct_scores = direct.score(query)
        # The direct index never saw the probe batches before it subscribed: compare on queries.
        assert remote.score(query) == direct_scores
    assert all(remote.worker(w)["in_sync"] and remote.worker(w)["gaps"] == 0 for w in (0, 1))


def test_bad_arguments_are_refused() -> None:
    manager = KVBlockManager(primary_blocks=4)
    with pytest.raises(ValueError, match="event_log_batches"):
        KVEventPublisher(KVBlockManager(primary_blocks=4, event_log_batches=0), "tcp://127.0.0.1:*")
    with pytest.raises(ValueError, match="encoding"):
        local_publisher(manager, encoding="json")
    with pytest.raises(ValueError, match="bad address"):
        KVEventPublisher(manager, "nonsense://*:1")
    with pytest.raises(ValueError, match="buffer_steps"):
        local_publisher(manager, buffer_steps=0)
    with pytest.raises(ValueError, match="medium"):
        local_publisher(manager, medium=["GPU"])
    with local_publisher(manager) as first:
        with pytest.raises(RuntimeError, match="cannot use"):
            KVEventPublisher(manager, "tcp://127.0.0.1:*", first.replay_endpoint)
        assert "KVEventPublisher(endpoint='tcp://127.0.0.1:" in repr(first)
    for payload in (b"", b"\x2a", b"\xdd\xff\xff\xff\xff", msgspec.msgpack.encode({"ts": 1.0})):
        with pytest.raises(ValueError, match="KV event batch"):
            decode_kv_event_batch(payload)
    with pytest.raises(ValueError, match="seq"):
        decode_kv_event_batch(msgspec.msgpack.encode({"ts": 1.0, "events": []}), -1)
