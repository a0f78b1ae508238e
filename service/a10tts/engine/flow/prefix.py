"""The estimator's view of a prefix of frames, kept so that streamed chunks need not recompute it.

In streaming mode the estimator is chunk-causal: a frame attends to every frame up to the end of
its own chunk, and its convolutions look only left. So the frames of chunks that no later input
reaches are computed identically by every call that contains them, at every Euler step. A
``FlowPrefix`` holds, for each Euler step, what the later frames need of them: the last input
frames of each causal convolution and the keys and values of each attention layer. The
estimator then runs on the new frames only (``docs/design.md``, "Speed"; the equivalence is
tested against full recomputation).

Layers meet a ``LayerPrefix`` in the estimator's call order, which is the same on every call:
``PrefixRecorder`` collects while the prefix itself runs, ``PrefixReader`` hands one voice's
prefix to every row of a call while new frames run. A step's tensors are packed into two
(``FlowPrefix.kv``/``conv``) so that loading a step into a CUDA graph's static buffers is two
copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class LayerPrefix(Protocol):
    """What each causal convolution and attention layer of one estimator call sees of the prefix."""

    frames: int  # prefix frames in front of the call's frames (0: the call records the prefix itself)

    def conv_context(self, x: Tensor, context: int) -> Tensor | None:
        """The ``context`` frames in front of ``x`` ``[B, T, C]`` for a causal convolution:
        ``[2, context, C]``, one per half of a guided call's rows, or None for zeros."""

    def past_keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor] | None:
        """The prefix's keys and values that ``k``, ``v`` ``[B, H, T, d]`` continue: ``[2, H, P, d]``
        each, one per half of a guided call's rows, or None (no prefix in front)."""


class PrefixRecorder:
    """Runs the prefix frames as a sequence start (zero left context) and keeps what they leave."""

    frames = 0

    def __init__(self) -> None:
        self.conv: list[Tensor] = []  # per convolution [2, context, C]: the guided call's two rows
        self.kv: list[tuple[Tensor, Tensor]] = []  # per attention layer [2, H, P, d]

    def conv_context(self, x: Tensor, context: int) -> None:
        self.conv.append(x[:, x.size(1) - context:])
        return None

    def past_keys_values(self, k: Tensor, v: Tensor) -> None:
        self.kv.append((k, v))
        return None

    def packed(self) -> tuple[Tensor, Tensor]:
        """``kv`` ``[L, 2 (keys, values), 2 (rows), H, P, d]`` and ``conv`` ``[2 (rows), S]``."""
        kv = torch.stack([torch.stack(pair) for pair in self.kv])
        return kv, torch.cat([c.flatten(1) for c in self.conv], dim=1)


class PrefixReader:
    """Puts one voice's prefix step (``FlowPrefix.kv``/``conv`` at one step) in front of the new
    frames of every row of a guided call (``2B`` rows: conditional, then unconditional)."""

    def __init__(self, kv: Tensor, conv: Tensor, conv_shapes: tuple[tuple[int, int], ...]) -> None:
        self.frames = kv.size(4)
        self._kv = iter(kv.unbind(0))
        sizes = [context * channels for context, channels in conv_shapes]
        self._conv = iter([part.view(2, *shape) for part, shape in zip(conv.split(sizes, dim=1), conv_shapes)])

    def conv_context(self, x: Tensor, context: int) -> Tensor:
        return next(self._conv)  # [2, context, C]

    def past_keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        past_k, past_v = next(self._kv).unbind(0)
        return past_k, past_v


@dataclass(frozen=True)
class FlowPrefix:
    """One voice's prefix: ``frames`` mel frames and, per Euler step, what ``PrefixRecorder.packed``
    keeps of them; ``conv_shapes``: (context, channels) of each causal convolution, in call order."""

    frames: int
    kv: list[Tensor]
    conv: list[Tensor]
    conv_shapes: tuple[tuple[int, int], ...]

    @classmethod
    def from_recorders(cls, frames: int, recorders: list[PrefixRecorder]) -> FlowPrefix:
        packed = [recorder.packed() for recorder in recorders]
        shapes = tuple((c.size(1), c.size(2)) for c in recorders[0].conv)
        return cls(frames, [kv for kv, _ in packed], [conv for _, conv in packed], shapes)

    def reader(self, step: int) -> PrefixReader:
        return PrefixReader(self.kv[step], self.conv[step], self.conv_shapes)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.kv, *self.conv])
