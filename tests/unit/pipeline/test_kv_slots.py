"""How many KV-cache slots the LM worker allocates, and how much memory "auto" gives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from a10tts.config import Config
from a10tts.pipeline.llm_worker import CPU_AUTO_KV_TOKENS, kv_slots
from a10tts.pipeline.memory_plan import (
    AUTO_KV_SHARE, OWN_MEMORY_KV_SHARE, gpu_baseline, kv_budget_bytes, start_waves, used_bytes_by_gpu,
)
from a10tts.pipeline.spec import StageSpec

PER_TOKEN = 12288  # CosyVoice2-0.5B in bf16: 2 x 24 layers x 2 KV heads x 64 x 2 bytes
GIB = 2**30


def slots(setting, *, budget_bytes=None, max_request_tokens=4096, max_running=32) -> int:
    return kv_slots(setting, max_request_tokens=max_request_tokens, max_running=max_running,
                    bytes_per_token=PER_TOKEN, budget_bytes=budget_bytes)


def test_explicit_tokens_make_whole_slots_capped_by_max_running() -> None:
    assert slots(65536) == 16
    assert slots(65536 + 4095) == 16
    assert slots(10**7) == 32


def test_auto_on_cpu_is_small_and_fixed() -> None:
    assert slots("auto") == CPU_AUTO_KV_TOKENS // 4096
    assert slots("auto", max_request_tokens=1024, max_running=4) == 4


def test_auto_on_gpu_fills_the_budget() -> None:
    assert slots("auto", budget_bytes=2 * GIB, max_running=1000) == 2 * GIB // PER_TOKEN // 4096
    assert slots("auto", budget_bytes=16 * GIB) == 32  # an A10 under its limit: every running request fits


def test_the_budget_is_a_share_of_what_the_service_left_under_the_limit() -> None:
    # 16 GiB limit, the other stages and the LM's weights hold 10 GiB: 6 GiB left
    budget = kv_budget_bytes(limit_bytes=16 * GIB, free_bytes=60 * GIB, service_used=10 * GIB, own_reserved=GIB)
    assert budget == int(6 * GIB * AUTO_KV_SHARE)
    # another tenant holds most of the card: what is free bounds it
    assert kv_budget_bytes(limit_bytes=16 * GIB, free_bytes=2 * GIB, service_used=10 * GIB,
                           own_reserved=GIB) == int(2 * GIB * AUTO_KV_SHARE)
    # the service is over its limit already: nothing, and kv_slots says what to change
    assert kv_budget_bytes(limit_bytes=8 * GIB, free_bytes=60 * GIB, service_used=9 * GIB, own_reserved=GIB) == 0
    with pytest.raises(ValueError, match="memory.gpu_memory_limit_gib"):
        slots("auto", budget_bytes=0)


def test_without_nvml_only_the_lm_s_own_memory_is_known_and_it_leaves_more_room() -> None:
    budget = kv_budget_bytes(limit_bytes=16 * GIB, free_bytes=60 * GIB, service_used=None, own_reserved=2 * GIB)
    assert budget == int(14 * GIB * OWN_MEMORY_KV_SHARE)
    assert used_bytes_by_gpu() is None or all(v >= 0 for v in used_bytes_by_gpu().values())


def test_no_room_for_one_request_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="less than one request of llm.max_request_tokens = 4096"):
        slots(2048)
    with pytest.raises(ValueError, match="memory.gpu_memory_limit_gib"):
        slots("auto", budget_bytes=10 * 2**20)


def test_the_lm_starts_after_the_other_stages_only_when_it_sizes_its_cache_from_their_memory() -> None:
    config = Config()
    specs = [StageSpec(stage, 0, config, Path("m"), Path("s"), Path("r"), Path("i"))
             for stage in ("api", "encode", "llm", "decode")]
    assert start_waves(specs, None) == [specs]
    first, second = start_waves(specs, {"uuid": 123})
    assert [s.stage for s in first] == ["api", "encode", "decode"] and all(s.gpu_baseline_used is None for s in first)
    assert [(s.stage, s.gpu_baseline_used) for s in second] == [("llm", {"uuid": 123})]
    assert gpu_baseline(config.model_copy(update={"llm": config.llm.model_copy(update={"kv_cache_tokens": 65536})})) is None
