"""The voice registry on disk: layout, persistence, and safety across processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from a10tts.voices import InvalidVoice, VoiceExists, VoiceRegistry


def test_a_voice_persists_in_the_documented_layout(tmp_path):
    voice = VoiceRegistry(tmp_path).create("alice", "Hello, I am Alice.", b"RIFF-wav-bytes")
    folder = tmp_path / "voices" / voice.id
    assert (folder / "prompt.wav").read_bytes() == b"RIFF-wav-bytes"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {"name": "alice", "prompt_text": "Hello, I am Alice.", "created": voice.created}
    reopened = VoiceRegistry(tmp_path)  # another process, later
    assert reopened.get(voice.id) == voice
    assert reopened.find("alice") == reopened.find(voice.id) == reopened.list()[0]
    assert [entry.name for entry in (tmp_path / "voices").iterdir() if not entry.name.startswith(".")] == [voice.id]


def test_missing_voices_and_bad_ids_are_none(tmp_path):
    registry = VoiceRegistry(tmp_path)
    assert registry.list() == []
    for name in ["voice-0000000000000000", "../../etc/passwd", "alice"]:
        assert registry.get(name) is None and registry.find(name) is None
        assert registry.delete(name) is False


def test_names_are_unique_and_checked(tmp_path):
    registry = VoiceRegistry(tmp_path)
    registry.create("alice", "", b"x")
    with pytest.raises(VoiceExists, match="already exists"):
        registry.create("alice", "", b"y")
    for bad in ["", " alice", "a/b", "x" * 65, "line\nbreak", "voice-0123456789abcdef"]:
        with pytest.raises(InvalidVoice):
            registry.create(bad, "", b"x")
    with pytest.raises(InvalidVoice, match="empty"):
        registry.create("bob", "", b"")
    assert [v.name for v in registry.list()] == ["alice"]


def test_delete_removes_the_voice_completely(tmp_path):
    registry = VoiceRegistry(tmp_path)
    voice = registry.create("alice", "", b"x")
    assert registry.delete(voice.id) is True
    assert registry.get(voice.id) is None and registry.list() == []
    assert list((tmp_path / "voices").iterdir()) == [tmp_path / "voices" / ".lock"]
    registry.create("alice", "", b"again")  # the name is free again


def _create(state_dir: Path, name: str, barrier) -> str:
    barrier.wait()
    try:
        return VoiceRegistry(state_dir).create(name, "", b"RIFF" + name.encode()).id
    except VoiceExists:
        return "exists"


def test_concurrent_workers_never_register_a_name_twice(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = 8
    with context.Manager() as manager, context.Pool(workers) as pool:
        barrier = manager.Barrier(workers)
        same = pool.starmap(_create, [(tmp_path, "shared", barrier)] * workers)
        barrier = manager.Barrier(workers)
        distinct = pool.starmap(_create, [(tmp_path, f"v{i}", barrier) for i in range(workers)])
    assert sorted(same).count("exists") == workers - 1
    assert "exists" not in distinct
    registry = VoiceRegistry(tmp_path)
    assert sorted(v.name for v in registry.list()) == sorted(["shared"] + [f"v{i}" for i in range(workers)])
    assert all(registry.get(v.id).wav == b"RIFF" + v.name.encode() for v in registry.list())


def _read_while_deleted(state_dir: Path, voice_ids: list[str]) -> int:
    registry = VoiceRegistry(state_dir)
    seen = 0
    for _ in range(200):
        for voice_id in voice_ids:
            voice = registry.get(voice_id)  # whole or None, never a half-deleted voice or an error
            if voice is not None:
                assert voice.wav == b"audio" and voice.name.startswith("n")
                seen += 1
        assert all(v.prompt_text == "t" for v in registry.list())
    return seen


def test_readers_see_a_voice_whole_or_not_at_all_while_it_is_deleted(tmp_path):
    registry = VoiceRegistry(tmp_path)
    ids = [registry.create(f"n{i}", "t", b"audio").id for i in range(20)]
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        readers = pool.starmap_async(_read_while_deleted, [(tmp_path, ids)] * 2)
        for voice_id in ids:
            assert registry.delete(voice_id)
        readers.get(timeout=60)
    assert registry.list() == []
