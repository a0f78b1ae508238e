"""How many KV-cache slots the LM worker allocates."""

from __future__ import annotations

import pytest

from a10tts.pipeline.llm_worker import AUTO_KV_SHARE, CPU_AUTO_KV_TOKENS, kv_slots

PER_TOKEN = 12288  # CosyVoice2-0.5B in bf16: 2 x 24 layers x 2 KV heads x 64 x 2 bytes


def slots(setting, *, free_bytes=None, max_request_tokens=4096, max_running=32) -> int:
    return kv_slots(setting, max_request_tokens=max_request_tokens, max_running=max_running,
                    bytes_per_token=PER_TOKEN, free_bytes=free_bytes)


def test_explicit_tokens_make_whole_slots_capped_by_max_running() -> None:
    assert slots(65536) == 16
    assert slots(65536 + 4095) == 16
    assert slots(10**7) == 32


def test_auto_on_cpu_is_small_and_fixed() -> None:
    assert slots("auto") == CPU_AUTO_KV_TOKENS // 4096
    assert slots("auto", max_request_tokens=1024, max_running=4) == 4


def test_auto_on_gpu_takes_a_share_of_the_free_memory() -> None:
    free = 2 * 2**30
    assert slots("auto", free_bytes=free, max_running=1000) == int(free * AUTO_KV_SHARE) // PER_TOKEN // 4096
    assert slots("auto", free_bytes=20 * 2**30) == 32  # an A10 under its limit: every running request fits


def test_no_room_for_one_request_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="less than one request of llm.max_request_tokens = 4096"):
        slots(2048)
    with pytest.raises(ValueError, match="memory.gpu_memory_limit_gib"):
        slots("auto", free_bytes=10 * 2**20)
