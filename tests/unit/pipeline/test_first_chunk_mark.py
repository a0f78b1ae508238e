"""The LM marks the tokens that complete a request's first chunk (the `decode_inbox` phase starts there)."""

from __future__ import annotations

from a10tts.pipeline.llm_worker import Route
from a10tts.pipeline.scheduler import TokenOutput


def outputs(route: Route, *steps: tuple[int, list[int], bool]) -> list[bool]:
    return [route.count_toward_first_chunk(TokenOutput("r", segment, tokens, finished, False))
            for segment, tokens, finished in steps]


def test_a_stream_marks_the_token_that_fills_its_first_chunk_once() -> None:
    route = Route(message=None, prompt={}, first_chunk=3)
    assert outputs(route, (0, [1], False), (0, [2], False), (0, [3], False), (0, [4], False)) == \
        [False, False, True, False]


def test_a_first_segment_shorter_than_the_chunk_marks_its_end() -> None:
    route = Route(message=None, prompt={}, first_chunk=30)
    assert outputs(route, (0, [1], False), (0, [], True), (1, [5], False)) == [False, True, False]


def test_without_streaming_the_whole_first_segment_is_the_first_chunk() -> None:
    route = Route(message=None, prompt={}, first_chunk=None)
    assert outputs(route, *[(0, [t], False) for t in range(50)], (0, [50], True), (1, [1], True))[-3:] == \
        [False, True, False]
