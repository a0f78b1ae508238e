"""CUDA graphs for the LM decode step, one per batch-size bucket.

A decode step of a 0.5B LM is a few hundred small kernels; launched one by one from Python it
takes tens of milliseconds, while the GPU needs well under one. Replaying a captured graph
launches them all at once. Inputs live in static buffers: each step copies the batch's tokens,
slots and positions in; padding rows use the cache's scratch slot, so they never touch a live
request. Batches larger than the largest bucket run eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .kv_cache import DecodeBatch, KVCache

_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class DecodeGraphs:
    def __init__(self, lm: torch.nn.Module, cache: KVCache, max_batch_size: int, compile: bool = False):
        self.lm, self.cache = lm, cache
        # torch.compile fuses the step's many small element-wise kernels (norms, rotary,
        # activations) before capture; each bucket compiles once, at start-up.
        self._decode = torch.compile(lm.decode_logp, dynamic=False) if compile else lm.decode_logp
        self.buckets = [b for b in _BUCKETS if b < max_batch_size] + [max_batch_size]
        device, largest = cache.device, self.buckets[-1]
        # One host->device copy per step: rows are tokens, slots, positions.
        self._host = torch.zeros(3, largest, dtype=torch.long, pin_memory=True)
        self._inputs = torch.zeros(3, largest, dtype=torch.long, device=device)
        self._inputs[1].fill_(cache.scratch_slot)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._outputs: dict[int, Tensor] = {}
        self._capture()

    def _step(self, size: int) -> Tensor:
        tokens, slots, positions = self._inputs[:, :size]
        return self._decode(tokens, DecodeBatch(slots, positions), self.cache)

    @torch.inference_mode()
    def _capture(self) -> None:
        pool = None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (Triton compiles, cuBLAS picks kernels) off-graph
            for size in self.buckets:
                self._step(size)
        torch.cuda.current_stream().wait_stream(side)
        for size in reversed(self.buckets):  # largest first: later graphs reuse its memory pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._outputs[size] = self._step(size)
            pool = graph.pool()
            self._graphs[size] = graph
        torch.cuda.synchronize()

    def step(self, slots: Sequence[int], tokens: Sequence[int] | Tensor) -> Tensor:
        """The decode step of `KVCache`-slots `slots`: fp32 log-probs ``[B, vocab]``."""
        size = len(slots)
        bucket = next((b for b in self.buckets if b >= size), None)
        if bucket is None:
            return self.lm.decode_logp(torch.as_tensor(tokens, device=self.cache.device),
                                       self.cache.reserve_decode(slots), self.cache)
        starts = self.cache.advance(slots, [1] * size)
        host = self._host[:, :bucket]
        host[0, :size] = torch.as_tensor(tokens, dtype=torch.long)
        host[1, :size] = torch.as_tensor(slots, dtype=torch.long)
        host[2, :size] = torch.as_tensor(starts, dtype=torch.long)
        host[0, size:], host[1, size:], host[2, size:] = 0, self.cache.scratch_slot, 0
        self._inputs[:, :bucket].copy_(host, non_blocking=True)
        self._graphs[bucket].replay()
        return self._outputs[bucket][:size].clone()
