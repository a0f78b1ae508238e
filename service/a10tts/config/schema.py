"""The configuration schema: the single source of truth for every key, default and bound.

`etc/a10tts/a10tts.toml` documents these keys with their defaults (a test keeps the two in
sync); profiles and `conf.d/` files are partial documents validated against the same models.
Defaults are the "balanced" profile of the A10 deployment guide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool

Precision = Literal["bfloat16", "float16", "float32"]
Auto = Literal["auto"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    dir: Path = Field(
        Path("/var/lib/a10tts/models/CosyVoice2-0.5B"),
        description="Official CosyVoice2-0.5B model directory (cosyvoice2.yaml, llm.pt, flow.pt, ...).",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description='"auto" uses the first visible CUDA GPU and falls back to the CPU.'
    )


class PrecisionConfig(Section):
    llm: Precision = Field("bfloat16", description="LM weights and KV cache dtype.")
    flow: Literal["float16", "float32"] = Field("float16", description="Flow-matching decoder dtype.")
    hift: Literal["float32"] = Field("float32", description="HiFT vocoder dtype (fp32 only: iSTFT).")


class ServerConfig(Section):
    host: str = Field("0.0.0.0", min_length=1, description="Address the HTTP API binds.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the HTTP API.")
    http_workers: int = Field(2, ge=1, le=64, description="HTTP (uvicorn) worker processes.")
    api_keys_file: str = Field(
        "", description='File with one API key per line; "" disables authentication.'
    )


class EncodeConfig(Section):
    processes: int = Field(1, ge=1, le=16, description="Encode worker processes.")
    concurrency: int = Field(
        16, ge=1, le=1024, description="Requests one encode process prepares at the same time."
    )
    prompt_cache_capacity: int = Field(
        200, ge=0, le=100_000, description="Prompt features kept in memory (0 disables the cache)."
    )


class LLMConfig(Section):
    max_running_requests: int = Field(
        32, ge=1, le=4096, description="Requests decoded together by the LM (continuous batching)."
    )
    kv_cache_tokens: Union[int, Auto] = Field(
        "auto",
        description='KV-cache capacity in tokens over all requests; "auto" sizes it from free VRAM.',
    )
    max_request_tokens: int = Field(
        4096, ge=64, le=32768, description="Per request: text + prompt + generated speech tokens."
    )
    prefill_token_budget: int = Field(
        8192, ge=64, le=262_144, description="Tokens admitted in one prefill batch."
    )
    schedule_interval_steps: int = Field(
        4, ge=1, le=1024, description="Decode steps between two admissions of waiting requests."
    )
    stream_buffer_seconds: float = Field(
        1.0, ge=0, le=60,
        description="Once a streaming request has its first chunk's tokens, the LM sits it out while the audio "
        "of its complete chunks is more than this many seconds ahead of the listener, then runs its next chunk, "
        "leaving GPU time to the decode stage; 0 = as fast as it can.",
    )
    stream_first_chunk_hold_ms: float = Field(
        0.0, ge=0, le=10_000,
        description="A streaming request sits out the LM's steps for this long once it has its first chunk's "
        "tokens, so that the first chunk's vocoding has the GPU to itself when nothing else runs; 0 = no pause.",
    )
    cuda_graphs: StrictBool = Field(True, description="Capture LM decode steps in CUDA graphs.")
    torch_compile: StrictBool = Field(
        True, description="Fuse the decode step with torch.compile before capture (faster steps, slower start)."
    )
    cuda_graph_max_batch_size: int = Field(
        32, ge=1, le=1024, description="Largest decode batch captured; larger ones run eagerly."
    )
    cuda_graph_max_prefill_tokens: int = Field(
        1024, ge=0, le=32768,
        description="Longest prompt (text + prompt speech tokens) that prefills from a CUDA graph, padded to a "
        "multiple of 64 tokens, one graph per prompt up to 4 per step; longer ones and larger batches run "
        "eagerly; 0 = always eagerly.",
    )


class DecodeConfig(Section):
    processes: int = Field(1, ge=1, le=16, description="Decode (flow + HiFT) workers.")
    in_llm_process: StrictBool = Field(
        False,
        description="Run the first decode worker on a thread of the LM's process, where the GPU runs their "
        "kernels side by side instead of time-slicing two processes (experimental: no faster yet in the service).",
    )
    max_batch_size: int = Field(
        16, ge=1, le=256, description="Streaming chunks one decode process batches per step."
    )
    max_batch_tokens: int = Field(
        800, ge=0, le=1 << 20,
        description="Speech tokens one decode batch runs through the flow at most (its chunks times the longest, "
        "which grows with a stream's length), so that a first chunk arriving meanwhile waits less; chunks whose "
        "listener is about to run dry go in anyway; 0 = no bound.",
    )
    yield_to_first_chunks: StrictBool = Field(
        True,
        description="While the LM is still generating a stream's first chunk, vocode only chunks whose listener "
        "is about to run dry, leaving the GPU to the LM's steps.",
    )
    cuda_graphs: StrictBool = Field(True, description="Replay the flow's Euler steps from CUDA graphs.")
    cuda_graph_max_frames: int = Field(
        1200, ge=0, le=15000,
        description="Flow graphs for inputs up to this many mel frames (50 per second of prompt and "
        "speech) are captured at start; longer inputs capture theirs on first use.",
    )
    torch_compile: StrictBool = Field(
        False, description="Fuse the flow estimator with torch.compile before capture (slower start)."
    )
    flow_tensorrt: StrictBool = Field(
        False,
        description="Run the flow estimator as a TensorRT engine, built once and cached, instead of "
        "CUDA graphs (needs a GPU and the tensorrt package: the gpu extra).",
    )
    first_hop_tokens: int = Field(
        25, ge=5, le=100, description="Speech tokens in the first streamed chunk (smaller = sooner)."
    )
    flow_prefix_cache_mib: int = Field(
        1024, ge=0, le=1 << 20,
        description="Memory per decode process for each voice's flow work on its prompt, which streamed "
        "chunks then skip (~460 MB for a full-size 5 s prompt, ~1 GB for 10 s); not with TensorRT; 0 = off.",
    )


class MemoryConfig(Section):
    gpu_memory_limit_gib: float = Field(
        16.0, gt=0, le=1024, description='GPU memory a10tts may use in total; "auto" sizes stay below it.'
    )


class LimitsConfig(Section):
    max_text_chars: int = Field(2000, ge=1, le=100_000, description="Longest accepted input text.")
    max_prompt_seconds: float = Field(30.0, gt=0, le=30.0, description="Longest prompt audio.")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest accepted request body."
    )
    max_waiting_requests: int = Field(
        256, ge=0, le=100_000, description="Queued requests beyond which new ones get 503."
    )
    request_timeout_seconds: float = Field(
        300.0, gt=0, le=3600, description="A request still unfinished after this is cancelled."
    )


class PathsConfig(Section):
    ipc_dir: str = Field(
        "", description='Directory of the IPC sockets; "" = the runtime directory (/run/a10tts).'
    )


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="Log line format.")
    access_log: StrictBool = Field(True, description="Log one line per HTTP request.")
    stats_interval_seconds: float = Field(
        10.0, ge=0, le=3600, description="Period of the throughput log line (0 disables it)."
    )


class Config(Section):
    profile: str = Field(
        "balanced",
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Profile applied when none was chosen with `a10tts profile use`.",
    )
    model: ModelConfig = ModelConfig()
    precision: PrecisionConfig = PrecisionConfig()
    server: ServerConfig = ServerConfig()
    encode: EncodeConfig = EncodeConfig()
    llm: LLMConfig = LLMConfig()
    decode: DecodeConfig = DecodeConfig()
    memory: MemoryConfig = MemoryConfig()
    limits: LimitsConfig = LimitsConfig()
    paths: PathsConfig = PathsConfig()
    logging: LoggingConfig = LoggingConfig()


# Keys a profile may not set: they choose the profile or identify the host.
PROFILE_FORBIDDEN_KEYS = frozenset({("profile",)})
