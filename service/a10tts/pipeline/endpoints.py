"""Where each process listens: ipc:// sockets in one directory only the service can enter."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Endpoints:
    directory: Path

    def prepare(self) -> None:
        """Create the directory with mode 0700 (sockets inherit no wider access)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def _ipc(self, name: str) -> str:
        return f"ipc://{self.directory / name}"

    def encode(self, index: int) -> str:  # PULL, bound by encode worker `index`
        return self._ipc(f"encode-{index}")

    @property
    def llm(self) -> str:  # PULL, bound by the LM worker (encoded requests and cancels)
        return self._ipc("llm")

    def decode(self, index: int) -> str:  # PULL, bound by decode worker `index`
        return self._ipc(f"decode-{index}")

    def api(self, index: int) -> str:  # PULL, bound by HTTP worker `index` (audio and failures)
        return self._ipc(f"api-{index}")

    @property
    def supervisor(self) -> str:  # PULL, bound by the supervisor (heartbeats, ready, done)
        return self._ipc("supervisor")

    @property
    def status(self) -> str:  # PUB, bound by the supervisor (StatusSnapshot)
        return self._ipc("status")
