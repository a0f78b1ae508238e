"""Voice prompt features kept across requests: LRU, thread-safe, computed once per key.

Encode threads call ``with cache.use(key, compute) as features``. The first caller of a key
computes it while later callers of the same key wait for that result instead of repeating the
work; an entry is pinned while any caller is inside ``use`` and is never evicted then. The cache
may hold more than ``capacity`` entries while they are all pinned, and shrinks back on release.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


def prompt_key(wav: bytes, prompt_text: str) -> str:
    """The same audio and transcript give the same features, whoever uploads them."""
    digest = hashlib.blake2b(wav, digest_size=16)
    digest.update(b"\0" + prompt_text.encode())
    return digest.hexdigest()


@dataclass
class _Entry(Generic[T]):
    result: Future[T] = field(default_factory=Future)
    pins: int = 0


class PromptCache(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @contextmanager
    def use(self, key: str, compute: Callable[[], T]) -> Iterator[T]:
        """The features of ``key``, computed by ``compute`` unless cached or being computed.

        A failed computation is not cached: its error reaches every caller waiting for it.
        """
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = _Entry()
            self._entries.move_to_end(key)
            entry.pins += 1
        try:
            if owner:
                try:
                    entry.result.set_result(compute())
                except BaseException as exc:
                    entry.result.set_exception(exc)
                    with self._lock:
                        self._entries.pop(key, None)
            yield entry.result.result()
        finally:
            with self._lock:
                entry.pins -= 1
                self._evict()

    def _evict(self) -> None:
        """Drop least recently used unpinned entries while over capacity (lock held)."""
        excess = len(self._entries) - self.capacity
        if excess <= 0:
            return
        for key, entry in list(self._entries.items()):  # oldest first
            if entry.pins == 0:
                del self._entries[key]
                excess -= 1
                if excess == 0:
                    return
