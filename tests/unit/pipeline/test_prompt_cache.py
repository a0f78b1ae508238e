"""The prompt cache under concurrent use: one computation per key, no eviction while in use."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from a10tts.pipeline.prompt_cache import PromptCache, prompt_key


def test_key_depends_on_audio_and_transcript() -> None:
    assert prompt_key(b"wav", "text") == prompt_key(b"wav", "text")
    assert len({prompt_key(b"wav", "text"), prompt_key(b"wav", "other"), prompt_key(b"wav2", "text"),
                prompt_key(b"wav\0", "text")}) == 4


def test_concurrent_users_of_a_key_share_one_computation() -> None:
    cache: PromptCache[str] = PromptCache(capacity=4)
    calls = []

    def compute() -> str:
        calls.append(1)
        time.sleep(0.05)
        return "features"

    def use() -> str:
        with cache.use("k", compute) as value:
            return value

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: use(), range(8))) == ["features"] * 8
    assert len(calls) == 1 and len(cache) == 1


def test_least_recently_used_entries_go_first() -> None:
    cache: PromptCache[str] = PromptCache(capacity=2)
    for key in ("a", "b", "a", "c"):
        with cache.use(key, lambda: key.upper()):
            pass
    computed = []
    with cache.use("a", lambda: computed.append("a") or "A2") as value:
        assert value == "A"  # still cached: used after b
    with cache.use("b", lambda: computed.append("b") or "B2") as value:
        assert value == "B2"  # evicted by c
    assert computed == ["b"] and len(cache) == 2


def test_an_entry_in_use_is_never_evicted() -> None:
    cache: PromptCache[str] = PromptCache(capacity=1)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache.use("pinned", lambda: "P"):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    for key in ("x", "y"):  # over capacity while "pinned" is in use: the others go instead
        with cache.use(key, lambda: key):
            pass
    with cache.use("pinned", lambda: pytest.fail("recomputed while in use")) as value:
        assert value == "P"
    release.set()
    holder.join()
    assert len(cache) == 1  # back to capacity once released


def test_a_failed_computation_reaches_every_waiter_and_is_not_cached() -> None:
    cache: PromptCache[str] = PromptCache(capacity=4)
    second_waits = threading.Event()
    calls = []

    def broken() -> str:
        calls.append(1)
        second_waits.wait(5)
        raise ValueError("unreadable audio")

    def use() -> str:
        with cache.use("k", broken) as value:
            return value

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(use)]
        while "k" not in cache._entries:
            time.sleep(0.001)
        futures.append(pool.submit(use))
        while cache._entries["k"].pins < 2:
            time.sleep(0.001)
        second_waits.set()
        for future in futures:
            with pytest.raises(ValueError, match="unreadable"):
                future.result()
    assert len(calls) == 1 and len(cache) == 0
    with cache.use("k", lambda: "fixed") as value:
        assert value == "fixed"


def test_capacity_zero_keeps_nothing() -> None:
    cache: PromptCache[str] = PromptCache(capacity=0)
    with cache.use("k", lambda: "v") as value:
        assert value == "v" and len(cache) == 1
    assert len(cache) == 0
