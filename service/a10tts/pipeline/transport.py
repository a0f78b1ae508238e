"""pyzmq plumbing of the stages: PULL inboxes, PUSH outboxes, tensors as raw frames.

One message on the wire: frame 0 is a msgspec msgpack struct (a contract message of
``messages.py`` or a stage-internal one of ``internal.py``). A message that carries tensors has
frame 1, the msgpack list of their ``TensorMeta`` (name, dtype, shape), then one frame of raw
bytes per tensor, sent and received without copies. Nothing is pickled.

Sends never block the caller: a peer that is gone or too far behind (its queue at the high-water
mark) makes ``Outbox.send`` return False and the caller decides what that means for a request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
import torch
import zmq

log = logging.getLogger(__name__)

LINGER_MS = 1000  # on close, give queued messages (last audio, failures) this long to leave
# After a peer restarts, a PUSH socket sends nothing until it has reconnected (messages queued for
# the dead peer flush first); zmq's default 100 ms let requests sent just after the new peer said
# ready fail. Reconnect attempts to a local socket are cheap.
RECONNECT_IVL_MS = 10


class TensorMeta(msgspec.Struct, array_like=True, frozen=True):
    name: str
    dtype: str  # torch dtype name without "torch.", e.g. "float32"
    shape: tuple[int, ...]


_DTYPES = {
    name: getattr(torch, name)
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "uint8", "bool")
}
_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(list[TensorMeta])


def pack(message: msgspec.Struct, tensors: Mapping[str, torch.Tensor] | None = None) -> list[Any]:
    """The frames of ``message`` and its tensors (CPU copies only for device tensors)."""
    frames: list[Any] = [_encoder.encode(message)]
    if tensors:
        metas, buffers = [], []
        for name, tensor in tensors.items():
            tensor = tensor.detach().cpu().contiguous()
            metas.append(TensorMeta(name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape)))
            # A uint8 view exposes any dtype (bfloat16 included) as a buffer without copying.
            buffers.append(tensor.reshape(-1).view(torch.uint8).numpy())
        frames += [_encoder.encode(metas), *buffers]
    return frames


def unpack(frames: list[zmq.Frame], decoder: msgspec.msgpack.Decoder) -> tuple[Any, dict[str, torch.Tensor]]:
    """Message and tensors of received frames; tensors share the frames' memory.

    Raises ``msgspec.DecodeError``/``ValidationError`` (or ``ValueError`` for bad tensor frames)
    on anything that is not a well-formed message of ``decoder``'s types.
    """
    message = decoder.decode(frames[0].buffer)
    if len(frames) == 1:
        return message, {}
    metas = _meta_decoder.decode(frames[1].buffer)
    if len(metas) != len(frames) - 2:
        raise ValueError(f"{len(metas)} tensors announced, {len(frames) - 2} frames received")
    tensors = {}
    for meta, frame in zip(metas, frames[2:]):
        dtype = _DTYPES.get(meta.dtype)
        if dtype is None:
            raise ValueError(f"tensor {meta.name!r} has unsupported dtype {meta.dtype!r}")
        if len(frame.buffer) == 0:  # torch.frombuffer refuses empty buffers
            tensors[meta.name] = torch.empty(meta.shape, dtype=dtype)
        else:
            tensors[meta.name] = torch.frombuffer(frame.buffer, dtype=dtype).reshape(meta.shape)
    return message, tensors


class Inbox:
    """The stage's bound PULL socket."""

    def __init__(self, context: zmq.Context, endpoint: str, decoder: msgspec.msgpack.Decoder) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.endpoint = endpoint
        self.decoder = decoder

    def receive_ready(self) -> list[tuple[Any, dict[str, torch.Tensor]]]:
        """Every message already queued (never waits); malformed ones are logged and dropped."""
        received = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return received
            try:
                received.append(unpack(frames, self.decoder))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                log.error("dropped a malformed message on %s: %s", self.endpoint, exc)

    def close(self) -> None:
        self.socket.close()


class Outbox:
    """PUSH sockets to peers, connected on first use and kept (zmq reconnects by itself)."""

    def __init__(self, context: zmq.Context) -> None:
        self._context = context
        self._sockets: dict[str, zmq.Socket] = {}

    def send(
        self, endpoint: str, message: msgspec.Struct, tensors: Mapping[str, torch.Tensor] | None = None
    ) -> bool:
        """Queue one message for ``endpoint``; False if the peer cannot take it now."""
        socket = self._sockets.get(endpoint)
        if socket is None:
            socket = self._context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, LINGER_MS)
            socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            socket.connect(endpoint)
            self._sockets[endpoint] = socket
        try:
            socket.send_multipart(pack(message, tensors), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("%s is not taking messages (gone or overloaded); dropped a %s",
                        endpoint, type(message).__name__)
            return False
        return True

    def close(self) -> None:
        for socket in self._sockets.values():
            socket.close()
        self._sockets.clear()
