"""GPU memory for the LM's KV cache when ``llm.kv_cache_tokens = "auto"``.

The supervisor starts the LM stage last, once every other stage has loaded its models and
captured its CUDA graphs, so that what the service already holds is known when the LM sizes its
cache: NVML's used memory of the LM's GPU now, less what that GPU used before the service
started (the supervisor's ``baseline``, per GPU UUID: another tenant's memory is not ours). The
cache takes ``AUTO_KV_SHARE`` of what is left under ``memory.gpu_memory_limit_gib`` (and of what
is free on the card); the rest is for activations: prefill, the LM's graph capture, the decode
stage's eager fallbacks. Without NVML the LM only knows its own memory and takes a smaller share.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..config import Config  # no torch here: the supervisor imports this module
from .spec import StageSpec

log = logging.getLogger(__name__)

AUTO_KV_SHARE = 0.8
OWN_MEMORY_KV_SHARE = 0.4  # without NVML: the other stages' memory is unknown, leave them room


def used_bytes_by_gpu() -> dict[str, int] | None:
    """Memory used on each GPU, by UUID (every process, ours or not); None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no GPU: NVMLError or an OSError underneath
        return None
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        return {_plain_uuid(pynvml.nvmlDeviceGetUUID(h)): int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
                for h in handles}
    except pynvml.NVMLError as exc:
        log.warning("cannot read GPU memory through NVML: %s", exc)
        return None
    finally:
        pynvml.nvmlShutdown()


def gpu_baseline(config: Config) -> dict[str, int] | None:
    """Before the children start: each GPU's used memory, if the LM will size its cache from it."""
    if config.llm.kv_cache_tokens != "auto" or config.model.device == "cpu":
        return None
    return used_bytes_by_gpu()


def start_waves(specs: list[StageSpec], baseline: dict[str, int] | None) -> list[list[StageSpec]]:
    """The children in the order they start, wave by wave, each wave ready before the next:
    with a baseline, the LM stage last, carrying it."""
    if baseline is None:
        return [specs]
    return [[s for s in specs if s.stage != "llm"],
            [replace(s, gpu_baseline_used=baseline) for s in specs if s.stage == "llm"]]


def _plain_uuid(uuid: str | bytes) -> str:
    """NVML says "GPU-<uuid>" (bytes in older bindings), torch "<uuid>"."""
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    return text.removeprefix("GPU-").lower()


def service_used_bytes(gpu_uuid: str, baseline: dict[str, int] | None) -> int | None:
    """What the service holds on the GPU ``gpu_uuid`` now: used memory above the baseline; None if unknown."""
    now = used_bytes_by_gpu()
    if baseline is None or now is None:
        return None
    uuid = _plain_uuid(gpu_uuid)
    if uuid not in now or uuid not in baseline:
        log.warning("GPU %s is not in NVML's list; sizing the KV cache from this process's memory only", uuid)
        return None
    return max(0, now[uuid] - baseline[uuid])


def kv_budget_bytes(*, limit_bytes: int, free_bytes: int, service_used: int | None, own_reserved: int) -> int:
    """Bytes the KV cache may take: a share of what is left under the limit and free on the card."""
    if service_used is None:
        return int(max(0, min(free_bytes, limit_bytes - own_reserved)) * OWN_MEMORY_KV_SHARE)
    return int(max(0, min(free_bytes, limit_bytes - service_used)) * AUTO_KV_SHARE)
