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


_FLOW_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class FlowGraphs:
    """CUDA graphs of the flow's whole Euler loop (10 estimator calls), per (batch, frames) bucket.

    The estimator is causal in time and masks attention by length, so zero-padding a request
    at the end (frames) or adding masked rows (batch) leaves its own frames unchanged: a few
    buckets serve every chunk. Graphs are captured on first use of a bucket and kept.
    """

    def __init__(self, cfm: torch.nn.Module, max_batch_size: int, frame_step: int = 50,
                 n_timesteps: int = 10, compile: bool = False):
        self.cfm, self.frame_step, self.n_timesteps = cfm, frame_step, n_timesteps
        self.batch_buckets = [b for b in _FLOW_BATCH_BUCKETS if b < max_batch_size] + [max_batch_size]
        if compile:  # fuse the estimator's kernels; the 10-step loop around it stays eager Python
            cfm.estimator.forward = torch.compile(cfm.estimator.forward, dynamic=False)
        self._solve = cfm
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor]] = {}
        self._pool = None

    def __call__(self, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor,
                 streaming: bool | Tensor = False, n_timesteps: int = 10) -> Tensor:
        batch, _, frames = mu.shape
        bucket_b = next((b for b in self.batch_buckets if b >= batch), None)
        if bucket_b is None or n_timesteps != self.n_timesteps:
            return self.cfm(mu, mask, spks, cond, streaming, n_timesteps)
        bucket_t = -(-frames // self.frame_step) * self.frame_step
        graph, inputs, output = self._graphs.get((bucket_b, bucket_t)) or self._capture(mu, spks, bucket_b, bucket_t)
        s_mu, s_mask, s_spks, s_cond, s_streaming = inputs
        for static in (s_mu, s_mask, s_cond):
            static.zero_()
        s_mask[:, :, 0] = 1  # padding rows: one valid frame keeps their softmax finite
        s_spks.zero_()
        s_mu[:batch, :, :frames] = mu
        s_mask[:batch, :, :frames] = mask
        s_cond[:batch, :, :frames] = cond
        s_spks[:batch] = spks
        s_streaming.fill_(False)
        s_streaming[:batch] = streaming
        graph.replay()
        return output[:batch, :, :frames].clone()

    @torch.inference_mode()
    def _capture(self, like: Tensor, like_spks: Tensor, batch: int, frames: int):
        channels, device, dtype = like.shape[1], like.device, like.dtype
        inputs = (
            torch.zeros(batch, channels, frames, device=device, dtype=dtype),
            torch.ones(batch, 1, frames, device=device, dtype=dtype),
            torch.zeros(batch, like_spks.shape[1], device=device, dtype=dtype),
            torch.zeros(batch, channels, frames, device=device, dtype=dtype),
            torch.zeros(batch, device=device, dtype=torch.bool),
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._solve(*inputs, self.n_timesteps)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self._solve(*inputs, self.n_timesteps)
        self._pool = graph.pool()
        self._graphs[(batch, frames)] = (graph, inputs, output)
        return self._graphs[(batch, frames)]
