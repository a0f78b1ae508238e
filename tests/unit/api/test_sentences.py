"""Sentence cutting for the bistream WebSocket."""

from __future__ import annotations

import pytest

from a10tts.api.sentences import SentenceBuffer


def cut(pieces: list[str], max_chars: int = 300) -> list[list[str]]:
    buffer = SentenceBuffer(max_chars)
    return [buffer.feed(piece) for piece in pieces] + [buffer.flush()]


def test_a_sentence_is_complete_once_whitespace_follows_its_period():
    pieces = ["Hello the", "re. How are", " you today? Fine"]
    assert cut(pieces) == [[], ["Hello there."], ["How are you today?"], ["Fine"]]


@pytest.mark.parametrize("text", ["It costs 3.5 dollars", "see e.g.this", "version 1.2.3"])
def test_periods_inside_words_and_numbers_do_not_cut(text):
    assert cut([text]) == [[], [text]]


def test_a_final_period_waits_for_the_next_piece():
    assert cut(["Wait.", " Done."]) == [[], ["Wait."], ["Done."]]


def test_closing_quotes_stay_with_their_sentence():
    assert cut(['He said "stop." Then (he left.) ok']) == [['He said "stop."', "Then (he left.)"], ["ok"]]


def test_chinese_punctuation_and_newlines_cut_at_once():
    assert cut(["你好。今天好吗？", "line one\nline two"]) == [["你好。", "今天好吗？"], ["line one"], ["line two"]]


def test_long_text_without_an_end_is_cut_at_the_last_space_before_the_limit():
    sentences = cut(["word " * 30], max_chars=42)
    assert all(len(s) <= 42 for piece in sentences for s in piece)
    assert " ".join(s for piece in sentences for s in piece) == ("word " * 30).strip()
    assert cut(["x" * 25], max_chars=10)[0] == ["x" * 10, "x" * 10]


def test_pieces_without_anything_to_speak_are_dropped():
    assert cut(["... ", "!!! ", "\n", "Real text."]) == [[], [], [], [], ["Real text."]]
