"""The voice registry: prompts uploaded once and reused by id (or name) in later requests.

Layout: `<state dir>/voices/<voice id>/prompt.wav` (the uploaded file, unchanged) and
`meta.json` {"name", "prompt_text", "created"}. A voice directory is written under a temporary
name and renamed into place, so readers see a voice completely or not at all; creation and
deletion hold an exclusive `flock` on `voices/.lock`, so names stay unique across the HTTP
worker processes. Reads take no lock. The HTTP workers write it; the encode stage reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VOICE_ID = re.compile(r"^voice-[0-9a-f]{16}$")
MAX_NAME_CHARS = 64
WAV_FILE = "prompt.wav"
META_FILE = "meta.json"


class VoiceExists(ValueError):
    pass


class InvalidVoice(ValueError):
    pass


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    name: str
    prompt_text: str
    created: float  # unix time


@dataclass(frozen=True)
class Voice(VoiceInfo):
    wav: bytes  # the uploaded prompt file (any format soundfile reads)


def check_name(name: str) -> str:
    if not name or name != name.strip() or len(name) > MAX_NAME_CHARS or not name.isprintable() or "/" in name:
        raise InvalidVoice(
            f"voice name {name!r} is invalid: use 1 to {MAX_NAME_CHARS} printable characters, "
            "without '/' or leading or trailing spaces"
        )
    if VOICE_ID.match(name):
        raise InvalidVoice(f"voice name {name!r} looks like a voice id; choose another name")
    return name


class VoiceRegistry:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / "voices"

    def create(self, name: str, prompt_text: str, wav_bytes: bytes) -> Voice:
        check_name(name)
        if not wav_bytes:
            raise InvalidVoice("the prompt audio is empty")
        voice = Voice(f"voice-{uuid.uuid4().hex[:16]}", name, prompt_text, time.time(), wav_bytes)
        with self._locked():
            if any(existing.name == name for existing in self.list()):
                raise VoiceExists(f"a voice named {name!r} already exists; delete it first or choose another name")
            staging = self.root / f".new-{voice.id}"
            staging.mkdir()
            try:
                meta = {"name": voice.name, "prompt_text": voice.prompt_text, "created": voice.created}
                _write_durably(staging / WAV_FILE, wav_bytes)
                _write_durably(staging / META_FILE, json.dumps(meta, ensure_ascii=False).encode())
                staging.rename(self.root / voice.id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(self.root)
        return voice

    def get(self, voice_id: str) -> Voice | None:
        """The voice with its prompt audio, or None."""
        info = self._info(voice_id)
        if info is None:
            return None
        try:
            wav = (self.root / voice_id / WAV_FILE).read_bytes()
        except FileNotFoundError:  # deleted since its metadata was read
            return None
        return Voice(info.id, info.name, info.prompt_text, info.created, wav)

    def find(self, id_or_name: str) -> VoiceInfo | None:
        """A voice by id, else by name, or None."""
        if VOICE_ID.match(id_or_name):
            return self._info(id_or_name)
        return next((voice for voice in self.list() if voice.name == id_or_name), None)

    def list(self) -> list[VoiceInfo]:
        """Every voice, oldest first."""
        if not self.root.is_dir():
            return []
        voices = [self._info(entry.name) for entry in self.root.iterdir() if VOICE_ID.match(entry.name)]
        return sorted((v for v in voices if v is not None), key=lambda voice: (voice.created, voice.id))

    def delete(self, voice_id: str) -> bool:
        """Remove a voice; False if there was none."""
        if not VOICE_ID.match(voice_id):
            return False
        with self._locked():
            doomed = self.root / f".old-{voice_id}"
            try:
                (self.root / voice_id).rename(doomed)  # atomic: readers see the voice or nothing
            except FileNotFoundError:
                return False
            _fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _info(self, voice_id: str) -> VoiceInfo | None:
        if not VOICE_ID.match(voice_id):
            return None
        try:
            meta = json.loads((self.root / voice_id / META_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return VoiceInfo(voice_id, meta["name"], meta["prompt_text"], meta["created"])

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
