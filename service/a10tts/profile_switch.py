"""Profile switching for `a10tts profile use` and the dashboard: one path for both.

Validate and record the profile (a10tts.config.profiles.activate), then ask a running service
to reload over the admin socket; if the service refuses, record the previous choice again, so
that what runs and what a restart would load stay the same. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .admin_client import (
    AdminClient,
    AdminError,
    AdminPermissionDenied,
    AdminRefused,
    ServiceNotRunning,
    progress_text,
)
from .config import ConfigError, Dirs, load_config
from .config.loader import available_profiles
from .config.profiles import Change, activate, diff, write_atomically


@dataclass(frozen=True)
class Profile:
    name: str
    description: str


@dataclass(frozen=True)
class ProfilesSnapshot:
    profiles: tuple[Profile, ...]
    active: str | None  # the profile the configuration resolves to now
    config_error: str = ""  # the configuration as it stands is invalid (every problem)


@dataclass(frozen=True)
class SwitchStep:
    """One thing that happened while switching, in order; the last one is the outcome."""

    kind: str  # recorded | progress, then the outcome: ready | not_running | denied | refused | failed
    message: str
    changes: tuple[Change, ...] = ()


class ProfileStore:
    def __init__(self, dirs: Dirs):
        self.dirs = dirs

    def read(self) -> ProfilesSnapshot:
        profiles = tuple(Profile(name, self.description(name)) for name in available_profiles(self.dirs))
        try:
            return ProfilesSnapshot(profiles, load_config(self.dirs).profile)
        except ConfigError as exc:
            return ProfilesSnapshot(profiles, self._recorded(), str(exc))

    def description(self, name: str) -> str:
        """The first comment line of a profile file."""
        try:
            text = (self.dirs.profiles / f"{name}.toml").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return ""
        return next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")

    def differences(self, old: str, new: str) -> list[Change]:
        """Effective settings that change when going from profile `old` to `new`; ConfigError if invalid."""
        return diff(load_config(self.dirs, profile=old).flat(), load_config(self.dirs, profile=new).flat())

    def switch(self, name: str, admin: AdminClient) -> Iterator[SwitchStep]:
        previous = self._recorded()
        try:
            _, changes = activate(self.dirs, name)
        except ConfigError as exc:
            yield SwitchStep("refused", f"profile '{name}' was not recorded:\n{exc}")
            return
        except OSError as exc:
            yield SwitchStep("failed", f"cannot record the profile in {self.dirs.active_profile_file}: "
                                       f"{exc.strerror or exc}; run as root")
            return
        yield SwitchStep("recorded", f"profile '{name}' is now active ({self.dirs.active_profile_file})",
                         tuple(changes))
        for step in _reload(name, admin):
            if step.kind == "refused":
                # Keep what runs and what a restart would load the same.
                self._record(previous)
                restored = previous or "the profile key of a10tts.toml"
                message = f"{step.message}\nthe previous choice ({restored}) is recorded again"
                step = SwitchStep("refused", message)
            yield step

    def _recorded(self) -> str | None:
        try:
            return self.dirs.active_profile_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def _record(self, name: str | None) -> None:
        if name is None:
            self.dirs.active_profile_file.unlink(missing_ok=True)
        else:
            write_atomically(self.dirs.active_profile_file, name + "\n")


def _reload(name: str, admin: AdminClient) -> Iterator[SwitchStep]:
    try:
        for answer in admin.reload():
            if answer.get("event"):
                yield SwitchStep("progress", progress_text(answer))
            if answer.get("done"):
                unchanged = "no setting changed; " if answer.get("restarted") is False else ""
                running = answer.get("profile") or name
                yield SwitchStep("ready", f"{unchanged}the service runs profile '{running}'")
                return
    except ServiceNotRunning as exc:
        yield SwitchStep("not_running", f"{exc}; the profile applies when the service starts")
        return
    except AdminPermissionDenied as exc:
        yield SwitchStep("denied", f"{exc}.\nThe profile is recorded and applies when the service "
                                   "restarts")
        return
    except AdminRefused as exc:
        yield SwitchStep("refused", f"the service did not apply it and keeps running the previous "
                                    f"configuration:\n{exc}")
        return
    except AdminError as exc:
        yield SwitchStep("failed", str(exc))
        return
    yield SwitchStep("failed", "the service stopped answering before it was ready again")
