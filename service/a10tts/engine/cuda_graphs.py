"""CUDA graphs: the LM decode step per batch bucket, the flow's Euler step per batch x frames bucket.

A decode step of a 0.5B LM is a few hundred small kernels; launched one by one from Python it
takes tens of milliseconds, while the GPU needs well under one. Replaying a captured graph
launches them all at once. Inputs live in static buffers: each step copies the batch's tokens,
slots and positions in; padding rows use the cache's scratch slot, so they never touch a live
request. Batches larger than the largest bucket run eagerly.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .kv_cache import DecodeBatch, KVCache

if TYPE_CHECKING:
    from .flow.cfm import CausalConditionalCFM

log = logging.getLogger(__name__)

_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class DecodeGraphs:
    def __init__(self, lm: torch.nn.Module, cache: KVCache, max_batch_size: int, compile: bool = False):
        self.lm, self.cache = lm, cache
        # torch.compile fuses the step's many small element-wise kernels (norms, rotary,
        # activations) before capture. Dynamic shapes: one compilation serves every bucket
        # (two: torch specialises batch 1), instead of one per bucket at start-up.
        self._decode = torch.compile(lm.decode_logp, dynamic=True) if compile else lm.decode_logp
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
    """CUDA graphs of one Euler step of the flow (an estimator call on the CFG batch and the
    update), per (batch, frames) bucket; a solve replays its bucket's graph once per step.

    The estimator is causal in time and masks attention by length, so zero-padding a request
    at the end (frames) or adding masked rows (batch) leaves its own frames unchanged: a few
    buckets serve every chunk. One step, not the whole loop, is captured so that a capture is
    cheap enough to take every bucket up to ``max_frames`` at start-up (``prepare``); a longer
    input captures its bucket on first use, which the log reports.
    """

    def __init__(self, cfm: CausalConditionalCFM, max_batch_size: int, frame_step: int = 50,
                 n_timesteps: int = 10, compile: bool = False):
        self.cfm, self.frame_step, self.n_timesteps = cfm, frame_step, n_timesteps
        self.batch_buckets = [b for b in _FLOW_BATCH_BUCKETS if b < max_batch_size] + [max_batch_size]
        if compile:  # fuse the estimator's kernels before capture; one compilation for all buckets
            cfm.estimator.forward = torch.compile(cfm.estimator.forward, dynamic=True)
        self._graphs: dict[tuple[int, int], _StepGraph] = {}
        self._pool = None

    def prepare(self, max_frames: int) -> None:
        """Capture every bucket up to ``max_frames`` frames, largest first so that the later
        captures reuse its memory pool."""
        started = time.perf_counter()
        for frames in range(self._bucket_frames(max_frames), 0, -self.frame_step):
            for batch in reversed(self.batch_buckets):
                if (batch, frames) not in self._graphs:
                    self._capture(batch, frames)
        log.info("captured %d flow step graphs (up to batch %d x %d frames) in %.1f s", len(self._graphs),
                 self.batch_buckets[-1], max_frames, time.perf_counter() - started)

    @functools.cached_property
    def _time_steps(self) -> tuple[Tensor, Tensor]:
        """The ODE times and their differences, on the device (exactly as the eager loop takes them)."""
        weight = next(self.cfm.estimator.parameters())
        times = self.cfm.time_grid(self.n_timesteps, weight.device)
        return times[:-1], times[1:] - times[:-1]

    def _bucket_frames(self, frames: int) -> int:
        return -(-frames // self.frame_step) * self.frame_step

    def __call__(self, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor,
                 streaming: bool | Tensor = False, n_timesteps: int = 10) -> Tensor:
        batch, _, frames = mu.shape
        bucket_b = next((b for b in self.batch_buckets if b >= batch), None)
        if bucket_b is None or n_timesteps != self.n_timesteps:
            return self.cfm(mu, mask, spks, cond, streaming, n_timesteps)
        bucket_t = self._bucket_frames(frames)
        step = self._graphs.get((bucket_b, bucket_t)) or self._capture(bucket_b, bucket_t)
        x, (s_mu, s_mask, s_spks, s_cond, s_streaming), t, dt = step.state
        for static in (s_mu, s_mask, s_cond, s_spks):
            static.zero_()
        s_mask[:, :, 0] = 1  # padding rows: one valid frame keeps their softmax finite
        s_mu[:batch, :, :frames] = mu
        s_mask[:batch, :, :frames] = mask
        s_cond[:batch, :, :frames] = cond
        s_spks[:batch] = spks
        s_streaming.fill_(False)
        s_streaming[:batch] = streaming
        x.copy_(self.cfm.noise(bucket_t, mu.device).expand_as(x))
        times, steps = self._time_steps
        for i in range(self.n_timesteps):
            t.copy_(times[i])
            dt.copy_(steps[i])
            step.graph.replay()
        return x[:batch, :, :frames].clone()

    @torch.inference_mode()
    def _capture(self, batch: int, frames: int) -> _StepGraph:
        started = time.perf_counter()
        weight = next(self.cfm.estimator.parameters())
        channels, device, dtype = self.cfm.estimator.out_channels, weight.device, weight.dtype
        x = torch.zeros(batch, channels, frames, device=device, dtype=torch.float32)
        inputs = (
            torch.zeros(batch, channels, frames, device=device, dtype=dtype),
            torch.ones(batch, 1, frames, device=device, dtype=dtype),
            torch.zeros(batch, channels, device=device, dtype=dtype),  # spks: projected to mel channels
            torch.zeros(batch, channels, frames, device=device, dtype=dtype),
            torch.zeros(batch, device=device, dtype=torch.bool),
        )
        t, dt = torch.zeros((), device=device), torch.zeros((), device=device)

        def step() -> None:
            x.copy_(self.cfm.euler_step(x, t, dt, self.cfm.guidance_inputs(*inputs)))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off-graph: cuBLAS and Triton pick their kernels
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            step()
        self._pool = graph.pool()
        self._graphs[(batch, frames)] = captured = _StepGraph(graph, (x, inputs, t, dt))
        log.debug("captured the flow step for batch %d x %d frames in %.2f s", batch, frames,
                  time.perf_counter() - started)
        return captured


@dataclass(frozen=True)
class _StepGraph:
    graph: torch.cuda.CUDAGraph
    state: tuple  # (x fp32 [B, C, T], (mu, mask, spks, cond, streaming), t, dt): static buffers
