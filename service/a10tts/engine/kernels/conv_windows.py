"""The input windows of a causal convolution over frames-last ``[B, T, C]``, in one pass (Triton).

The flow estimator runs its convolutions (kernel size 3) as one GEMM over each frame's window of
the frames before it: ``[B, T, size * C]``, zeros or a voice prefix's frames in front of the first.
torch builds that from a padded copy and a concatenation of shifted slices, two full copies, and
a third where a prefix goes in front; here one kernel writes the windows from the input and the
prefix's frames (3.5 ms of a loaded Euler step's ~42 on an H100 were the concatenations).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from a10tts.engine.kernels import HAVE_TRITON, in_front_of_halves, runs_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

_FRAMES_PER_PROGRAM = 16


def causal_windows(x: Tensor, size: int, past: Tensor | None = None) -> Tensor:
    """``[B, T, size * C]``: frame t's window is the input frames ``t - size + 1 .. t``, those
    before the first taken from ``past`` (``[2, size - 1, C]``, one per half of the rows: a
    guided call's conditional and unconditional rows) or zero."""
    if not runs_triton(x):
        return causal_windows_reference(x, size, past)
    batch, frames, channels = x.shape
    x = x.contiguous()
    out = x.new_empty(batch, frames, size * channels)
    has_past = past is not None
    past = past.to(x.dtype) if has_past else x  # a voice prefix's is a view into its packed step: read in place
    grid = (triton.cdiv(frames, _FRAMES_PER_PROGRAM), batch)
    _windows_kernel[grid](
        x, past, out, frames, channels, max(batch // 2, 1), *past.stride(),
        SIZE=size, HAS_PAST=has_past, BLOCK_T=_FRAMES_PER_PROGRAM, BLOCK_C=triton.next_power_of_2(channels),
    )
    return out


def causal_windows_reference(x: Tensor, size: int, past: Tensor | None) -> Tensor:
    frames = x.size(1)
    padded = F.pad(x, (0, 0, size - 1, 0)) if past is None else in_front_of_halves(past.to(x.dtype), x, dim=1)
    return torch.cat([padded[:, k : k + frames] for k in range(size)], dim=2)


if HAVE_TRITON:

    @triton.jit(do_not_specialize=["frames", "half_rows"])  # one variant for every call: see chunk_attention
    def _windows_kernel(X, Past, Out, frames, channels, half_rows, spr, spt, spc,
                        SIZE: tl.constexpr, HAS_PAST: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        row = tl.program_id(1)
        t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None]
        c = tl.arange(0, BLOCK_C)[None, :]
        inside = (t < frames) & (c < channels)
        for k in tl.static_range(SIZE):
            source = t + k - (SIZE - 1)  # the input frame at window slot k; negative: in front
            value = tl.load(X + (row * frames + source) * channels + c, mask=inside & (source >= 0), other=0.0)
            if HAS_PAST:
                before = tl.load(Past + (row // half_rows) * spr + (SIZE - 1 + source) * spt + c * spc,
                                 mask=inside & (source < 0), other=0.0)
                value = tl.where(source < 0, before, value)
            tl.store(Out + ((row * frames + t) * SIZE + k) * channels + c, value, mask=inside)
