"""What the supervisor hands each child process it starts (stages and HTTP workers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from .endpoints import Endpoints

STAGES = ("api", "encode", "llm", "decode")


@dataclass(frozen=True)
class StageSpec:
    stage: str  # one of STAGES
    index: int
    config: Config
    model_dir: Path  # resolved (the demo model's path under --demo)
    state_dir: Path
    runtime_dir: Path
    ipc_dir: Path
    counts: dict[str, int] = field(default_factory=dict)  # processes per stage, e.g. {"api": 2, ...}
    listen_socket: Any = None  # the bound TCP socket, HTTP workers only (kept by the supervisor)
    gpu_baseline_used: dict[str, int] | None = None  # LM only: GPU memory used before the service (memory_plan.py)
    guests: tuple[StageSpec, ...] = ()  # stages that run on threads of this one's process (stage.GuestThread)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.ipc_dir)

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index}"
