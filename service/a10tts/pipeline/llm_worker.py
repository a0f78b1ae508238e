"""LM stage: speech tokens for every request, batched continuously (``scheduler.py``).

Each loop turn takes what arrived (encoded requests, cancels), runs one scheduler step and sends
each decode worker one ``TokenBatch`` with its requests' new tokens. A request's decode worker is
chosen when it starts (the one with the fewest requests being generated) and keeps its streaming
state to the end. Refusals (too long: 400, queue full: 503) and failures (500) go straight to the
request's HTTP worker; a failed or cancelled request is also cancelled at its decode worker.

With ``decode.in_llm_process`` the LM's process also hosts the first decode worker, on a thread
with a CUDA stream of its own (``stage.GuestThread``); the LM's stream has the higher priority.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from a10tts.api.metrics import QUEUE_TIME
from a10tts.config import Config
from a10tts.engine.cuda_graphs import CAPTURE_LOCK
from a10tts.engine.flow.flow import lookahead_tokens
from a10tts.engine.kv_cache import KVCache
from a10tts.engine.llm import CosyVoice2LM
from a10tts.engine.model_dir import ModelDir
from a10tts.engine.sampling import make_generator
from a10tts.engine.streaming import ChunkPlan

from . import decode_worker
from .first_audio import stamp
from .internal import LLM_INBOX, PROMPT_TENSORS, DecodeStart, EncodedRequest, TokenBatch, TokenDelta, segment_texts
from .memory_plan import kv_budget_bytes, service_used_bytes
from .messages import Cancel
from .scheduler import LMRequest, Scheduler, SchedulerLimits, StepResult, TokenOutput
from .spec import StageSpec
from .stage import RequestError, Stage, device_of, dtype_of, own_stream, setup_logging

log = logging.getLogger(__name__)

CPU_AUTO_KV_TOKENS = 32768
LM_STREAM_PRIORITY = -1  # above the decode guests' default 0 (benchmarks/gpu_sharing.py)
EARLY_CANCELS = 1024  # cancels of requests not here yet (still encoding), remembered to drop them


def kv_slots(
    setting: int | str, *, max_request_tokens: int, max_running: int, bytes_per_token: int, budget_bytes: int | None
) -> int:
    """KV-cache slots of ``max_request_tokens`` each: ``kv_cache_tokens`` worth, never more than can run.

    ``"auto"`` fills ``budget_bytes`` (``memory_plan.kv_budget_bytes``), or takes
    ``CPU_AUTO_KV_TOKENS`` when it is None (CPU).
    """
    if setting == "auto":
        tokens = CPU_AUTO_KV_TOKENS if budget_bytes is None else budget_bytes // bytes_per_token
    else:
        tokens = int(setting)
    slots = min(tokens // max_request_tokens, max_running)
    if slots < 1:
        raise ValueError(
            f"the KV cache holds {tokens} tokens (llm.kv_cache_tokens = {setting!r}), less than one request of "
            f"llm.max_request_tokens = {max_request_tokens}; raise llm.kv_cache_tokens or "
            "memory.gpu_memory_limit_gib, or lower llm.max_request_tokens"
        )
    return slots


def new_cache_for(
    model: CosyVoice2LM, config: Config, device: torch.device, baseline: dict[str, int] | None
) -> KVCache:
    budget = None
    if device.type == "cuda" and config.llm.kv_cache_tokens == "auto":
        budget = kv_budget_bytes(
            limit_bytes=int(config.memory.gpu_memory_limit_gib * 2**30),
            free_bytes=torch.cuda.mem_get_info(device)[0],
            service_used=service_used_bytes(str(torch.cuda.get_device_properties(device).uuid), baseline),
            own_reserved=torch.cuda.memory_reserved(device),
        )
    qwen = model.qwen_config
    element_size = model.llm_decoder.weight.element_size()
    slots = kv_slots(
        config.llm.kv_cache_tokens,
        max_request_tokens=config.llm.max_request_tokens,
        max_running=config.llm.max_running_requests,
        bytes_per_token=2 * qwen.num_hidden_layers * qwen.num_key_value_heads * qwen.head_dim * element_size,
        budget_bytes=budget,
    )
    if budget is not None:
        log.info("KV cache: %d slots of %d tokens (auto: %.2f GiB may go to it)", slots,
                 config.llm.max_request_tokens, budget / 2**30)
    return model.new_kv_cache(num_slots=slots, capacity=config.llm.max_request_tokens)


@dataclass
class Route:
    """Where a request's results go."""

    message: EncodedRequest
    prompt: dict[str, torch.Tensor] = field(repr=False)  # for DecodeStart; dropped once sent
    first_chunk: int | None  # a stream's first chunk in tokens; None: the whole first segment
    decode: int | None = None  # its decode worker, once started
    first_chunk_sent: bool = False
    first_segment_tokens: int = 0  # sent so far

    def count_toward_first_chunk(self, out: TokenOutput) -> bool:
        """Count ``out``'s tokens; True once, for the output that gives the decode worker what it
        needs for the first audio."""
        if self.first_chunk_sent or out.segment != 0:
            return False
        self.first_segment_tokens += len(out.tokens)
        due = self.first_chunk is not None and self.first_segment_tokens >= self.first_chunk
        self.first_chunk_sent = out.finished or due
        return self.first_chunk_sent


class StepLog:
    """A debug line every ``period_s`` of traffic: LM steps, their mean time and rows, which show
    how the LM fares while the decode processes share its GPU."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.period_s = period_s
        self._restart(time.perf_counter())

    def _restart(self, now: float) -> None:
        self.since, self.steps, self.busy_s, self.rows = now, 0, 0.0, 0

    def add(self, seconds: float, rows: int) -> None:
        self.steps += 1
        self.busy_s += seconds
        self.rows += rows
        now = time.perf_counter()
        if now - self.since >= self.period_s:
            log.debug("LM: %d steps in %.1f s, %.2f ms each, %.1f rows each", self.steps, now - self.since,
                      1000 * self.busy_s / self.steps, self.rows / self.steps)
            self._restart(now)


@dataclass(frozen=True)
class ChunkShape:
    """How the decode stage cuts a streamed request into chunks: the LM paces by them."""

    first_hop: int
    lookahead: int

    def plan(self, prompt_tokens: int) -> ChunkPlan:
        return ChunkPlan(prompt_tokens, self.first_hop, self.lookahead)


class LLMWorker:
    def __init__(
        self, stage: Stage, scheduler: Scheduler, device: torch.device, num_decoders: int, chunks: ChunkShape
    ) -> None:
        self.stage = stage
        self.scheduler = scheduler
        self.device = device
        self.chunks = chunks
        self.routes: dict[str, Route] = {}
        self.decode_load = [0] * num_decoders
        self.early_cancels: OrderedDict[str, None] = OrderedDict()
        self.step_log = StepLog()

    def run(self) -> None:
        cache = self.scheduler.cache
        self.stage.ready(device=str(self.device), kv_slots=cache.num_slots, max_request_tokens=cache.capacity)
        with torch.inference_mode():
            while not self.stage.stopping:
                self.stage.wait(self.scheduler.next_step_in())
                with CAPTURE_LOCK:  # no CUDA work while a decode guest captures a graph
                    self.turn()
                self.stage.heartbeat(self.scheduler.load())
        self.stage.fail_stopped({rid: route.message.reply_to for rid, route in self.routes.items()})

    def turn(self) -> None:
        """Take what arrived, then run a scheduler step if one is due."""
        for message, tensors in self.stage.receive():
            if isinstance(message, Cancel):
                self.cancel(message.request_id)
            else:
                self.accept(message, tensors)
        if self.scheduler.next_step_in() == 0:
            started = time.perf_counter()
            result = self.scheduler.step()
            self.step_log.add(time.perf_counter() - started, len(result.outputs))
            self.publish(result)

    def accept(self, message: EncodedRequest, tensors: dict[str, torch.Tensor]) -> None:
        rid = message.request_id
        if rid in self.early_cancels:
            del self.early_cancels[rid]
            return
        if rid in self.routes:
            log.error("request id %s arrived twice; the second one is refused", rid)
            self.stage.fail(rid, message.reply_to, 400, f"request id {rid!r} is already in use")
            return
        try:
            request = LMRequest(
                request_id=rid,
                segments=[t.to(self.device) for t in segment_texts(tensors, message.num_segments)],
                prompt_text=tensors["llm_prompt_text"].to(self.device),
                prompt_speech=tensors["llm_prompt_speech"].to(self.device),
                generator=make_generator(message.seed),
                num_tokens=message.num_tokens,
                stream=message.stream,
                chunks=self.chunks.plan(len(tensors["prompt_speech_tokens"])) if message.stream else None,
            )
            prompt = {name: tensors[name] for name in PROMPT_TENSORS}
            self.scheduler.add(request)
        except KeyError as exc:
            self.stage.fail(rid, message.reply_to, 500, f"the encode stage sent no {exc} tensor")
        except RequestError as exc:
            self.stage.fail(rid, message.reply_to, exc.status, exc.message)
        else:
            self.routes[rid] = Route(message, prompt, request.chunks.next_end if request.chunks else None)

    def cancel(self, rid: str) -> None:
        self.scheduler.cancel(rid)
        route = self._forget(rid)
        if route is None:  # finished here (decode may still be busy with it) or still encoding
            self.early_cancels[rid] = None
            while len(self.early_cancels) > EARLY_CANCELS:
                self.early_cancels.popitem(last=False)
            for index in range(len(self.decode_load)):
                self.stage.outbox.send(self.stage.endpoints.decode(index), Cancel(rid))
        elif route.decode is not None:
            self.stage.outbox.send(self.stage.endpoints.decode(route.decode), Cancel(rid))

    def publish(self, result: StepResult) -> None:
        """Start, feed and fail requests at their decode and HTTP workers."""
        for request, message in result.failed:
            self._fail(self.routes[request.request_id], 500, message)
        for request in result.started:
            route = self.routes.get(request.request_id)
            if route is not None and route.message.arrival:
                QUEUE_TIME.observe(max(0.0, time.time() - route.message.arrival))
            if route is not None and not self._start(route):
                self.scheduler.cancel(request.request_id)
                self._fail(route, 503, "the decode stage is not taking requests")
        batches: dict[int, list[tuple[Route, TokenDelta]]] = {}
        for out in result.outputs:
            route = self.routes.get(out.request_id)
            if route is None:  # failed in this step
                continue
            chunk_sent = time.time() if route.count_toward_first_chunk(out) else None
            delta = TokenDelta(out.request_id, out.segment, out.tokens, out.finished, chunk_sent)
            batches.setdefault(route.decode, []).append((route, delta))
            if out.done:
                self._forget(out.request_id)
        for index, batch in batches.items():
            if not self.stage.outbox.send(self.stage.endpoints.decode(index), TokenBatch([d for _, d in batch])):
                for route, delta in batch:
                    self.scheduler.cancel(delta.request_id)
                    self._fail(route, 503, f"decode worker {index} is not taking tokens")

    def _start(self, route: Route) -> bool:
        route.decode = min(range(len(self.decode_load)), key=self.decode_load.__getitem__)
        self.decode_load[route.decode] += 1
        m = route.message
        marks = stamp({"arrival": m.arrival, "encoded": m.encoded}, "first_token")  # prefilled this step
        start = DecodeStart(m.request_id, m.reply_to, m.num_segments, m.stream, m.speed, m.seed, marks)
        sent = self.stage.outbox.send(self.stage.endpoints.decode(route.decode), start, route.prompt)
        route.prompt = {}
        return sent

    def _fail(self, route: Route, status: int, message: str) -> None:
        rid = route.message.request_id
        self._forget(rid)
        log.error("request %s failed: %s", rid, message)
        self.stage.fail(rid, route.message.reply_to, status, message)
        if route.decode is not None:
            self.stage.outbox.send(self.stage.endpoints.decode(route.decode), Cancel(rid))

    def _forget(self, rid: str) -> Route | None:
        route = self.routes.pop(rid, None)
        if route is not None and route.decode is not None:
            self.decode_load[route.decode] -= 1
        return route


def main(spec: StageSpec) -> None:
    setup_logging(spec)
    config = spec.config
    stage = Stage(spec, spec.endpoints.llm, LLM_INBOX)
    device = device_of(spec)
    model_dir = ModelDir.open(spec.model_dir)
    # Guests (the first decode worker) load first: the KV cache is sized from what they leave.
    guests = [decode_worker.hosted(guest, stage, model_dir, device) for guest in spec.guests]
    for guest in guests:
        guest.wait_loaded()
    model = model_dir.load("llm", device, dtype_of(config, "llm", device))
    cache = new_cache_for(model, config, device, spec.gpu_baseline_used)
    if device.type == "cuda" and config.llm.cuda_graphs:
        model.enable_cuda_graphs(cache, min(config.llm.cuda_graph_max_batch_size, cache.num_slots),
                                 compile=config.llm.torch_compile,
                                 max_prefill_tokens=config.llm.cuda_graph_max_prefill_tokens)
    scheduler = Scheduler(model, cache, SchedulerLimits.from_config(config))
    num_decoders = spec.counts.get("decode", config.decode.processes)
    chunks = ChunkShape(config.decode.first_hop_tokens, lookahead_tokens(model_dir.hparams["flow"].args))
    for guest in guests:
        guest.serve()
    try:
        # With guests, a stream ahead of theirs: every streamed request's next tokens wait on the
        # LM's steps. Alone, the LM keeps the default stream, as measured before guests existed.
        with own_stream(device, priority=LM_STREAM_PRIORITY) if guests else contextlib.nullcontext():
            LLMWorker(stage, scheduler, device, num_decoders, chunks).run()
    finally:
        for guest in guests:
            guest.stop()
        stage.close()
