"""Messages and tensors over real zmq sockets: raw frames, no pickle, sends that never block."""

from __future__ import annotations

import pytest
import torch
import zmq

from a10tts.pipeline.internal import LLM_INBOX, EncodedRequest
from a10tts.pipeline.messages import Cancel
from a10tts.pipeline.transport import Inbox, Outbox, pack


@pytest.fixture
def context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_message_and_tensors_round_trip(context: zmq.Context) -> None:
    inbox = Inbox(context, "inproc://llm", LLM_INBOX)
    outbox = Outbox(context)
    message = EncodedRequest("r1", 2, 1, True, 1.0, 7, None)
    tensors = {
        "ids": torch.tensor([3, 1, 4], dtype=torch.int32),
        "mel": torch.randn(5, 80).T,  # not contiguous
        "half": torch.randn(4, dtype=torch.bfloat16),
        "empty": torch.zeros(0, dtype=torch.int32),
        "big": torch.randn(100_000),  # above zmq's copy threshold: sent as its own buffer
    }
    assert outbox.send("inproc://llm", message, tensors)
    assert outbox.send("inproc://llm", Cancel("r1"))
    received = []
    while len(received) < 2:
        inbox.socket.poll(1000)
        received += inbox.receive_ready()
    (got, got_tensors), (cancel, no_tensors) = received
    assert got == message and cancel == Cancel("r1") and no_tensors == {}
    assert got_tensors.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert got_tensors[name].dtype == tensor.dtype
        assert torch.equal(got_tensors[name], tensor)
    outbox.close()
    inbox.close()


def test_malformed_messages_are_dropped(context: zmq.Context) -> None:
    inbox = Inbox(context, "inproc://llm", LLM_INBOX)
    raw = context.socket(zmq.PUSH)
    raw.connect("inproc://llm")
    raw.send(b"\x93not msgpack of ours")
    raw.send_multipart(pack(Cancel("x"), {"t": torch.zeros(2)})[:2])  # tensor announced, frame missing
    raw.send_multipart(pack(Cancel("ok")))
    received = []
    for _ in range(20):
        inbox.socket.poll(100)
        received += inbox.receive_ready()
        if received:
            break
    assert [message for message, _ in received] == [Cancel("ok")]
    raw.close()
    inbox.close()


def test_send_to_a_stuck_peer_returns_false_instead_of_blocking(context: zmq.Context) -> None:
    outbox = Outbox(context)
    endpoint = "inproc://nobody-reads"
    sink = context.socket(zmq.PULL)
    sink.setsockopt(zmq.RCVHWM, 1)
    sink.bind(endpoint)
    results = [outbox.send(endpoint, Cancel(str(i))) for i in range(3000)]  # default HWM is 1000
    assert results[0] and not results[-1]
    sink.close()
    outbox.close()
