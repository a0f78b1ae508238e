"""Where configuration, state and runtime files live (systemd's directory variables first)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Environment variables that locate directories; they are not configuration keys.
DIR_ENV_VARS = frozenset(
    {"A10TTS_CONFIG_DIR", "A10TTS_STATE_DIR", "A10TTS_RUNTIME_DIR", "A10TTS_CACHE_DIR"}
)


def _first(value: str | None) -> str | None:
    # systemd passes a colon-separated list when a unit names several directories.
    return value.split(":")[0] if value else None


def _pick(explicit: str | os.PathLike | None, env: Mapping[str, str], ours: str, systemd: str, default: str) -> Path:
    return Path(explicit or env.get(ours) or _first(env.get(systemd)) or default)


@dataclass(frozen=True)
class Dirs:
    config: Path
    state: Path
    runtime: Path
    cache: Path

    @classmethod
    def resolve(
        cls,
        config_dir: str | os.PathLike | None = None,
        state_dir: str | os.PathLike | None = None,
        runtime_dir: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Dirs":
        env = os.environ if env is None else env
        return cls(
            config=_pick(config_dir, env, "A10TTS_CONFIG_DIR", "CONFIGURATION_DIRECTORY", "/etc/a10tts"),
            state=_pick(state_dir, env, "A10TTS_STATE_DIR", "STATE_DIRECTORY", "/var/lib/a10tts"),
            runtime=_pick(runtime_dir, env, "A10TTS_RUNTIME_DIR", "RUNTIME_DIRECTORY", "/run/a10tts"),
            cache=_pick(None, env, "A10TTS_CACHE_DIR", "CACHE_DIRECTORY", "/var/cache/a10tts"),
        )

    @property
    def main_file(self) -> Path:
        return self.config / "a10tts.toml"

    @property
    def conf_d(self) -> Path:
        return self.config / "conf.d"

    @property
    def profiles(self) -> Path:
        return self.config / "profiles"

    @property
    def active_profile_file(self) -> Path:
        return self.state / "active-profile"

    @property
    def admin_socket(self) -> Path:
        return self.runtime / "admin.sock"
