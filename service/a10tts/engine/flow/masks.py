"""Padding and chunked-attention masks shared by the flow encoder and estimator."""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``[B]`` lengths -> ``[B, max_len]`` bool, True on each row's valid frames."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)


def attention_mask(valid: Tensor, chunk_size: int, streaming: bool | Tensor) -> Tensor:
    """Which keys each query may attend to.

    ``valid`` is ``[B, T]`` bool. Without streaming every query sees every valid key
    (``[B, 1, T]``). With streaming (``chunk_size > 0``) a frame sees everything up to the end
    of its own chunk, chunks counted from frame 0 with all left chunks visible (``[B, T, T]``).
    ``streaming`` is one flag for the batch or a ``[B]`` bool tensor (one flag per request), so
    a batch can mix streaming chunks with final full-context calls without a host sync.
    """
    keys = valid.unsqueeze(1)
    per_request = isinstance(streaming, Tensor)
    if chunk_size <= 0 or (not per_request and not streaming):
        return keys
    position = torch.arange(valid.size(1), device=valid.device)
    chunk_end = (torch.div(position, chunk_size, rounding_mode="floor") + 1) * chunk_size
    visible = position.unsqueeze(0) < chunk_end.unsqueeze(1)  # [T, T]: key j < end of query i's chunk
    if per_request:
        visible = visible | ~streaming.view(-1, 1, 1)
    return keys & visible
