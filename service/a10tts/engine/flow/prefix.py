"""The estimator's view of a prefix of frames, kept so that streamed chunks need not recompute it.

In streaming mode the estimator is chunk-causal: a frame attends to every frame up to the end of
its own chunk, and its convolutions look only left. So the frames of chunks that no later input
reaches are computed identically by every call that contains them, at every Euler step. A
``FlowPrefix`` holds, for each Euler step, what the later frames need of them: the last input
frames of each causal convolution and the keys and values of each attention layer. The
estimator then runs on the new frames only (``docs/design.md``, "Speed"; the equivalence is
tested against full recomputation).

Layers meet a ``LayerPrefix`` in the estimator's call order, which is the same on every call:
``PrefixRecorder`` collects while the prefix itself runs, ``PrefixReader`` hands the collected
tensors back while new frames run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class LayerPrefix(Protocol):
    """What each causal convolution and attention layer of one estimator call sees of the prefix."""

    keys_valid: Tensor | None  # [B, P]: which prefix keys are real, when the frames continue a prefix

    def conv_input(self, x: Tensor, context: int) -> Tensor:
        """``x`` ``[B, T, C]`` with ``context`` frames in front for a causal convolution."""

    def keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, H, T, d]`` keys and values with the prefix's in front."""


class PrefixRecorder:
    """Runs the prefix frames as a sequence start (zero left context) and keeps what they leave."""

    keys_valid = None  # the frames run are the prefix itself

    def __init__(self) -> None:
        self.conv: list[Tensor] = []
        self.kv: list[tuple[Tensor, Tensor]] = []

    def conv_input(self, x: Tensor, context: int) -> Tensor:
        self.conv.append(x[:, x.size(1) - context:].clone())  # not a view that keeps all of x
        return F.pad(x, (0, 0, context, 0))

    def keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.kv.append((k, v))
        return k, v


class PrefixReader:
    """Puts a recorded prefix in front of the new frames, layer by layer."""

    def __init__(self, conv: list[Tensor], kv: list[tuple[Tensor, Tensor]], keys_valid: Tensor) -> None:
        self._conv, self._kv = iter(conv), iter(kv)
        self.keys_valid = keys_valid

    def conv_input(self, x: Tensor, context: int) -> Tensor:
        return torch.cat([next(self._conv).to(x.dtype), x], dim=1)

    def keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        past_k, past_v = next(self._kv)
        return torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)


@dataclass(frozen=True)
class FlowPrefix:
    """One voice's prefix: ``frames`` mel frames, and per Euler step the recorder's tensors for
    the two rows of a guided estimator call (conditional, then unconditional)."""

    frames: int
    steps: list[PrefixRecorder]

    @property
    def nbytes(self) -> int:
        tensors = [t for step in self.steps for t in [*step.conv, *(x for kv in step.kv for x in kv)]]
        return sum(t.numel() * t.element_size() for t in tensors)


def batch_prefixes(prefixes: list[FlowPrefix]) -> list[PrefixReader]:
    """Readers, one per Euler step, for a guided call over these rows (row ``b`` from
    ``prefixes[b]``; the unconditional halves follow the conditional ones). Shorter prefixes are
    padded at their end; each reader's ``keys_valid`` ``[2B, longest]`` masks the padding."""
    longest = max(p.frames for p in prefixes)
    device = prefixes[0].steps[0].kv[0][0].device
    frames = torch.tensor([p.frames for p in prefixes], device=device)
    valid = (torch.arange(longest, device=device) < frames.unsqueeze(1)).repeat(2, 1)

    def guided(tensors: list[Tensor], pad: int = 0) -> Tensor:
        """``[2, ...]`` per row -> ``[2B, ...]``: conditional rows first; keys padded to ``longest``."""
        padded = [F.pad(t, (0, 0, 0, pad - t.size(2))) if pad else t for t in tensors]
        return torch.cat([t[:1] for t in padded] + [t[1:] for t in padded])

    readers = []
    for step in range(len(prefixes[0].steps)):
        rows = [p.steps[step] for p in prefixes]
        conv = [guided([r.conv[i] for r in rows]) for i in range(len(rows[0].conv))]
        kv = [(guided([r.kv[i][0] for r in rows], longest), guided([r.kv[i][1] for r in rows], longest))
              for i in range(len(rows[0].kv))]
        readers.append(PrefixReader(conv, kv, valid))
    return readers
