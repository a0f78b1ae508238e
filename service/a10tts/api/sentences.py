"""Cut text that arrives in pieces (an LLM's output) into sentences to synthesise one by one.

A sentence ends after Chinese/Japanese end punctuation, after `.`, `!`, `?` or `;` followed by
whitespace (so "3.5" and "e.g.x" stay whole; a final "." waits for the next piece or the
end), or at a newline. Closing quotes and brackets stay with their sentence. Text that grows
past `max_chars` without an end is cut at its last space or comma. Pieces with nothing to
speak (only punctuation) are dropped.
"""

from __future__ import annotations

import re

_CLOSERS = "[" + re.escape("\"'”’)）]】}」』》") + "]*"
_SENTENCE_END = re.compile(rf"[。！？；…]+{_CLOSERS}|[.!?;]+{_CLOSERS}(?=\s)|\n")
_SOFT_BREAK = re.compile(r"[\s,，、:：]")


def speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


class SentenceBuffer:
    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._text = ""

    def feed(self, piece: str) -> list[str]:
        """The sentences `piece` completes."""
        self._text += piece
        sentences = []
        while (end := self._next_end()) is not None:
            sentences.append(self._text[:end])
            self._text = self._text[end:]
        return [s.strip() for s in sentences if speakable(s)]

    def flush(self) -> list[str]:
        """End of input: the rest, whatever it is."""
        rest = [*self.feed(""), self._text.strip()]
        self._text = ""
        return [s for s in rest if speakable(s)]

    def _next_end(self) -> int | None:
        match = _SENTENCE_END.search(self._text, 0, self.max_chars + 1)
        if match:
            return match.end()
        if len(self._text) <= self.max_chars:
            return None
        breaks = [m.end() for m in _SOFT_BREAK.finditer(self._text, 0, self.max_chars)]
        return breaks[-1] if breaks else self.max_chars
