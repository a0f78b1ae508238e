"""Encode stage: check a SynthesisRequest, turn its text and voice into LM inputs, pass them on.

Requests are prepared ``encode.concurrency`` at a time in a thread pool (onnxruntime and torch
release the GIL); the main loop only moves messages, so it keeps beating while threads work.
A request that cannot be served gets ``RequestFailed`` straight to its HTTP worker: 400 with
what to fix for bad input, 404 for an unknown voice, 500 for a bug.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
import torch

from a10tts.engine.frontend import Frontend, FrontendLimits, ModelInputs, PromptFeatures
from a10tts.engine.model_dir import ModelDir
from a10tts.voices import VoiceRegistry

from .internal import ENCODE_INBOX, EncodedRequest, encoded_tensors
from .messages import SynthesisRequest
from .prompt_cache import PromptCache, prompt_key
from .spec import StageSpec
from .stage import RequestError, Stage, device_of, setup_logging

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.5, 2.0

ModeInputs = Callable[[Frontend, SynthesisRequest, PromptFeatures], list[ModelInputs]]
MODES: dict[str, ModeInputs] = {
    "zero_shot": lambda frontend, request, prompt: frontend.frontend_zero_shot(request.text, prompt),
    "cross_lingual": lambda frontend, request, prompt: frontend.frontend_cross_lingual(request.text, prompt),
    "instruct2": lambda frontend, request, prompt: frontend.frontend_instruct2(
        request.text, request.instruct_text, prompt
    ),
}


def check_options(request: SynthesisRequest) -> None:
    """What can be refused before any audio is read."""
    if request.mode not in MODES:
        raise RequestError(400, f"unknown mode {request.mode!r}; choose one of {', '.join(MODES)}")
    if not MIN_SPEED <= request.speed <= MAX_SPEED:
        raise RequestError(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {request.speed:g}")
    if request.stream and request.speed != 1.0:
        raise RequestError(400, "speed can only be changed without streaming; send stream=false or speed=1.0")
    if request.num_tokens is not None and request.num_tokens < 1:
        raise RequestError(400, f"num_tokens must be at least 1, got {request.num_tokens}")


class RequestEncoder:
    """The work of one request; called from pool threads, so everything it touches is thread-safe."""

    def __init__(self, frontend: Frontend, cache: PromptCache[PromptFeatures], voices: VoiceRegistry) -> None:
        self.frontend = frontend
        self.cache = cache
        self.voices = voices

    def encode(self, request: SynthesisRequest) -> tuple[EncodedRequest, dict[str, torch.Tensor]]:
        check_options(request)
        prompt_text, wav = self._prompt_source(request)
        compute = partial(self.frontend.prompt_features, prompt_text, wav)
        try:
            with self.cache.use(prompt_key(wav, prompt_text), compute) as prompt:
                segments = MODES[request.mode](self.frontend, request, prompt)
        except ValueError as exc:  # the frontend's and the audio loader's errors are for the client
            raise RequestError(400, str(exc)) from None
        message = EncodedRequest(
            request_id=request.request_id,
            reply_to=request.reply_to,
            num_segments=len(segments),
            stream=request.stream,
            speed=request.speed,
            seed=request.seed,
            num_tokens=request.num_tokens,
            arrival=request.arrival,
            encoded=time.time(),
        )
        return message, encoded_tensors(segments)

    def _prompt_source(self, request: SynthesisRequest) -> tuple[str, bytes]:
        """Transcript and audio bytes of the request's voice: a registered one or the upload."""
        if request.voice_id:
            voice = self.voices.get(request.voice_id)
            if voice is None:
                raise RequestError(404, f"voice {request.voice_id!r} is not registered; see GET /v1/voices")
            return voice.prompt_text, voice.wav
        if not request.prompt_wav:
            raise RequestError(
                400, "no voice prompt: send prompt_wav (audio of at least 16 kHz) or the voice_id of a registered voice"
            )
        return request.prompt_text, request.prompt_wav


class EncodeLoop:
    def __init__(self, stage: Stage, encoder: RequestEncoder, concurrency: int) -> None:
        self.stage = stage
        self.encoder = encoder
        self.concurrency = concurrency
        self.pending: dict[Future, SynthesisRequest] = {}

    def run(self) -> None:
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="encode") as pool:
            self.stage.ready(concurrency=self.concurrency, prompt_cache_capacity=self.encoder.cache.capacity)
            while not self.stage.stopping:
                self.stage.wait(None)
                for request, _ in self.stage.receive():
                    future = pool.submit(self.encoder.encode, request)
                    future.add_done_callback(lambda _: self.stage.wakeup.wake())
                    self.pending[future] = request
                for future in [f for f in self.pending if f.done()]:
                    self._finish(self.pending.pop(future), future)
                self.stage.heartbeat(self.load())
            pool.shutdown(wait=False, cancel_futures=True)
            self.stage.fail_stopped({r.request_id: r.reply_to for r in self.pending.values()})

    def _finish(self, request: SynthesisRequest, future: Future) -> None:
        try:
            message, tensors = future.result()
        except RequestError as exc:
            self.stage.fail(request.request_id, request.reply_to, exc.status, exc.message)
        except Exception as exc:
            log.exception("request %s failed in the encode stage", request.request_id)
            self.stage.fail(request.request_id, request.reply_to, 500, f"internal error in the encode stage: {exc}")
        else:
            if not self.stage.outbox.send(self.stage.endpoints.llm, message, tensors):
                self.stage.fail(request.request_id, request.reply_to, 503, "the LM stage is not taking requests")

    def load(self) -> dict[str, float]:
        in_flight = len(self.pending)
        return {
            "running": min(in_flight, self.concurrency),
            "waiting": max(in_flight - self.concurrency, 0),
            "prompt_cache_entries": len(self.encoder.cache),
        }


def main(spec: StageSpec) -> None:
    setup_logging(spec)
    config = spec.config
    stage = Stage(spec, spec.endpoints.encode(spec.index), ENCODE_INBOX)
    device = device_of(spec)
    model_dir = ModelDir.open(spec.model_dir)
    frontend = Frontend.from_model_dir(
        spec.model_dir,
        token_mel_ratio=model_dir.hparams["flow"].args.get("token_mel_ratio", 2),
        limits=FrontendLimits(
            max_text_chars=config.limits.max_text_chars, max_prompt_seconds=config.limits.max_prompt_seconds
        ),
        device=device,
        # Its results go to other processes. Kept on the CPU, a request with a cached voice makes
        # no GPU call here: each copy would wait for this process's turn on the GPU, which the
        # driver time-slices with the LM and decode processes.
        output_device="cpu",
    )
    encoder = RequestEncoder(frontend, PromptCache(config.encode.prompt_cache_capacity), VoiceRegistry(spec.state_dir))
    try:
        EncodeLoop(stage, encoder, config.encode.concurrency).run()
    finally:
        stage.close()

