"""Decode stage: flow + HiFT over the chunks of many requests at once (``decode_batch.py``).

Each loop turn takes what the LM sent (starts, token batches, cancels), vocodes one batch and
sends every row's audio to its HTTP worker as int16 PCM ``AudioChunk``s. A request whose batch
fails gets ``RequestFailed`` 500 and is cancelled at the LM (freeing its KV slot); the other
requests go on. Tokens of requests unknown here (cancelled, failed) are dropped.

A decode worker runs in a process of its own (``main``) or, with ``decode.in_llm_process``, on a
thread of the LM's process (``hosted``).
"""

from __future__ import annotations

import logging

import torch

from a10tts.config import Config
from a10tts.engine.flow.tensorrt_engine import enable_tensorrt
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.streaming import longest_streamed_chunk_frames

from .decode_batch import Audio, DecodeBatcher, DecodeRequest
from .internal import DECODE_INBOX, DecodeStart, TokenBatch, prompt_from
from .messages import AudioChunk, Cancel
from .spec import StageSpec
from .stage import GuestThread, Stage, device_of, dtype_of, setup_logging

log = logging.getLogger(__name__)


def pcm16(samples: torch.Tensor) -> bytes:
    """float audio in [-1, 1] -> little-endian int16 bytes."""
    scaled = (samples.float().clamp(-1.0, 1.0) * 32767.0).round()
    return scaled.numpy().astype("<i2").tobytes()


class DecodeWorker:
    def __init__(self, stage: Stage, batcher: DecodeBatcher) -> None:
        self.stage = stage
        self.batcher = batcher

    def run(self) -> None:
        self.stage.ready(device=str(self.batcher.device), max_batch_size=self.batcher.max_batch_size)
        with torch.inference_mode():
            while not self.stage.stopping:
                self.stage.wait(self.batcher.next_step_in())
                for message, tensors in self.stage.receive():
                    if isinstance(message, DecodeStart):
                        self.start(message, tensors)
                    elif isinstance(message, TokenBatch):
                        self.add_tokens(message)
                    else:
                        self.batcher.cancel(message.request_id)
                audio, failed = self.batcher.step()
                for piece in audio:
                    self.send(piece)
                for request, exc in failed:
                    log.error("request %s failed in the decode stage: %s", request.request_id, exc)
                    self.fail(request, f"the decode stage failed: {exc}")
                self.stage.heartbeat({"running": len(self.batcher.requests), "waiting": self.batcher.backlog})
        self.stage.fail_stopped({r.request_id: r.reply_to for r in self.batcher.requests.values()})

    def start(self, message: DecodeStart, tensors: dict[str, torch.Tensor]) -> None:
        try:
            prompt = prompt_from(tensors)
        except KeyError as exc:
            self.stage.fail(message.request_id, message.reply_to, 500, f"the LM stage sent no {exc} tensor")
            self.stage.outbox.send(self.stage.endpoints.llm, Cancel(message.request_id))
            return
        self.batcher.start(
            message.request_id, message.reply_to, prompt, stream=message.stream, speed=message.speed,
            num_segments=message.num_segments, seed=message.seed, marks=message.marks,
        )

    def add_tokens(self, batch: TokenBatch) -> None:
        for delta in batch.deltas:
            request = self.batcher.requests.get(delta.request_id)
            if request is None:
                continue
            try:
                request.add(delta.segment, delta.tokens, delta.finished, delta.chunk_sent)
            except ValueError as exc:
                self.batcher.cancel(request.request_id)
                self.fail(request, str(exc))

    def send(self, audio: Audio) -> None:
        request = audio.request
        marks = request.marks if audio.seq == 0 else {}
        chunk = AudioChunk(request.request_id, audio.seq, pcm16(audio.samples), audio.final, marks)
        if not self.stage.reply(request.reply_to, chunk):  # its HTTP worker is gone: stop the work
            self.batcher.cancel(request.request_id)
            self.stage.outbox.send(self.stage.endpoints.llm, Cancel(request.request_id))

    def fail(self, request: DecodeRequest, message: str) -> None:
        self.stage.fail(request.request_id, request.reply_to, 500, message)
        self.stage.outbox.send(self.stage.endpoints.llm, Cancel(request.request_id))


def load_batcher(config: Config, model_dir: ModelDir, device: torch.device) -> DecodeBatcher:
    """The flow and HiFT with their fast paths, batched as ``decode.*`` says."""
    flow = model_dir.load("flow", device, dtype_of(config, "flow", device))
    hift = model_dir.load("hift", device, torch.float32)
    if config.decode.flow_tensorrt:  # instead of CUDA graphs (docs/design.md, "Speed")
        enable_tensorrt(flow, model_dir.path, device, max_batch_size=config.decode.max_batch_size)
    elif device.type == "cuda" and config.decode.cuda_graphs:
        flow.enable_cuda_graphs(max_batch_size=config.decode.max_batch_size, compile=config.decode.torch_compile,
                                max_frames=config.decode.cuda_graph_max_frames)
        # HiFT only up to streamed chunks' length (and HiftGraphs' rows x frames bound): larger
        # inputs are GPU-bound, and the graph pool keeps the largest bucket's scratch memory.
        hift.enable_cuda_graphs(max_batch_size=config.decode.max_batch_size, max_frames=longest_streamed_chunk_frames(
            config.decode.first_hop_tokens, flow.pre_lookahead_len, flow.token_mel_ratio))
    return DecodeBatcher(
        flow,
        hift,
        first_hop_tokens=config.decode.first_hop_tokens,
        max_batch_size=config.decode.max_batch_size,
        max_batch_tokens=config.decode.max_batch_tokens,
        yield_to_first_chunks=config.decode.yield_to_first_chunks,
        prefix_budget_bytes=config.decode.flow_prefix_cache_mib * 2**20,
    )


def hosted(spec: StageSpec, host: Stage, model_dir: ModelDir, device: torch.device) -> GuestThread:
    """A decode worker on a thread of ``host``'s process (the LM's), loading there now."""
    stage = Stage(spec, spec.endpoints.decode(spec.index), DECODE_INBOX, host=host)
    return GuestThread(stage, lambda: DecodeWorker(stage, load_batcher(spec.config, model_dir, device)).run, device)


def main(spec: StageSpec) -> None:
    """A decode worker in a process of its own."""
    setup_logging(spec)
    stage = Stage(spec, spec.endpoints.decode(spec.index), DECODE_INBOX)
    device = device_of(spec)
    batcher = load_batcher(spec.config, ModelDir.open(spec.model_dir), device)
    try:
        DecodeWorker(stage, batcher).run()
    finally:
        stage.close()
