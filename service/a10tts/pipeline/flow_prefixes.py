"""Per voice, the flow's work on the prompt that every streamed chunk would otherwise repeat.

A streamed chunk runs the flow over the voice's prompt and every token so far. The prompt's
leading chunks come out the same for every chunk of every request in that voice
(``FlowModel.prompt_prefix``), so the decode stage computes them once per voice and the flow
continues from them. Entries are dropped least recently used past a byte budget: a full-size
5 s prompt keeps ~460 MB, a 10 s one ~1 GB (design.md).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from a10tts.engine.flow import FlowModel
from a10tts.engine.flow.prefix import FlowPrefix
from a10tts.engine.frontend import PromptFeatures

MAX_VOICES = 4096  # remembered at once, with a prefix or without one


def voice_key(prompt: PromptFeatures) -> bytes:
    """What identifies a voice to the flow: its prompt tokens, prompt mel and speaker embedding."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (prompt.prompt_speech_tokens, prompt.prompt_mel, prompt.speaker_embedding):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


class VoicePrefixes:
    """Prefixes by voice key, least recently used dropped first past ``budget_bytes`` or past
    ``max_voices`` entries. Voices without a prefix are remembered too (as None): the byte budget
    alone would never drop them, so a service that meets many short-prompt voices needs the cap."""

    def __init__(self, flow: FlowModel, budget_bytes: int, max_voices: int = MAX_VOICES) -> None:
        self.flow = flow
        self.budget_bytes = budget_bytes
        self.max_voices = max_voices
        self._entries: OrderedDict[bytes, FlowPrefix | None] = OrderedDict()
        self.nbytes = 0  # of the prefixes held

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0 and self.flow.continues_prefixes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, prompt: PromptFeatures) -> FlowPrefix | None:
        """The voice's prefix, computed on first use; None if its prompt is too short to hold one
        or the prefix alone is over the budget (both remembered: computing one costs an eager
        Euler loop, ~0.3 s on a GPU)."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        prefix = self.flow.prompt_prefix(prompt.prompt_speech_tokens, prompt.prompt_mel, prompt.speaker_embedding)
        if prefix is not None and prefix.nbytes > self.budget_bytes:
            prefix = None
        self._entries[key] = prefix
        self.nbytes += _size(prefix)
        while self.nbytes > self.budget_bytes or len(self._entries) > self.max_voices:
            self.nbytes -= _size(self._entries.popitem(last=False)[1])
        return prefix


def _size(prefix: FlowPrefix | None) -> int:
    return 0 if prefix is None else prefix.nbytes
