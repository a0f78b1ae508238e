"""The library layer: everything the dashboard reads or does, without any Textual import."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Options
from a10tts.admin_client import AdminClient
from .nvml import NvmlSource
from .ports import PortWatcher
from a10tts.profile_switch import ProfileStore
from .server import ServerClient
from .systemd import JournalTail, SystemdUnit


@dataclass
class Sources:
    gpu: NvmlSource
    port: PortWatcher
    server: ServerClient
    unit: SystemdUnit
    journal: JournalTail
    profiles: ProfileStore
    admin: AdminClient

    @classmethod
    def from_options(cls, options: Options) -> Sources:
        return cls(
            gpu=NvmlSource.system(),
            port=PortWatcher(options.host, options.port),
            server=ServerClient(options.url),
            unit=SystemdUnit(options.unit),
            journal=JournalTail(options.unit),
            profiles=ProfileStore(options.dirs),
            admin=AdminClient(options.dirs.admin_socket),
        )
