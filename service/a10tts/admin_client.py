"""Client side of the admin socket (docs/dev/service-contracts.md, "Admin socket").

Used by `a10tts ctl`, `a10tts profile use` and the dashboard; torch-free.

One JSON object per line each way. A command's answer is either one line, or progress lines
(`"event": ...`) ending with a line that has `"done": true`. Every failure is an AdminError
whose message tells the operator what happened and what to do.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ADMIN_GROUP = "a10tts-admin"


class AdminError(Exception):
    """The admin request failed; str() is the explanation for the operator."""


class ServiceNotRunning(AdminError):
    pass


class AdminPermissionDenied(AdminError):
    pass


class AdminRefused(AdminError):
    """The service answered `ok: false`, e.g. it refused an invalid configuration."""


class AdminClient:
    def __init__(self, socket_path: Path, timeout_s: float = 600.0):
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s  # the longest wait for any one answer line (reloads load models)

    def request(self, command: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Sends one command; yields each answer line, the last one included."""
        with self._connect() as sock, sock.makefile("rwb") as stream:
            stream.write(json.dumps(command).encode() + b"\n")
            stream.flush()
            while True:
                try:
                    line = stream.readline()
                except TimeoutError:
                    raise AdminError(f"the service sent nothing for {self.timeout_s:.0f} s "
                                     f"after {command['cmd']!r}; see its journal") from None
                if not line:
                    raise AdminError(f"the service closed the admin connection before {command['cmd']!r} "
                                     "finished; see its journal")
                answer = _parse(line)
                if not answer.get("ok"):
                    raise AdminRefused(str(answer.get("error") or "the service refused the request"))
                yield answer
                if answer.get("done") or "event" not in answer:
                    return

    def reload(self) -> Iterator[dict[str, Any]]:
        """Re-read the configuration and wait until the service is ready again (or refused it)."""
        return self.request({"cmd": "reload", "wait": True})

    def _connect(self) -> socket.socket:
        path = self.socket_path
        not_running = "no a10tts service is running here"
        try:
            return self._open()
        except FileNotFoundError:
            raise ServiceNotRunning(f"{not_running} (no admin socket at {path})") from None
        except ConnectionRefusedError:
            raise ServiceNotRunning(f"{not_running} ({path} is left over from an earlier run and "
                                    "nothing answers on it)") from None
        except PermissionError:
            raise AdminPermissionDenied(
                f"permission denied on {path}: only root and members of the {ADMIN_GROUP} group may "
                f"control the service. Join the group (sudo usermod -aG {ADMIN_GROUP} $USER, then log "
                "in again) or run as root") from None
        except OSError as exc:
            raise AdminError(f"cannot connect to the admin socket {path}: {exc.strerror or exc}") from None

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout_s)
            sock.connect(str(self.socket_path))
        except BaseException:
            sock.close()
            raise
        return sock


def _parse(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise AdminError(f"the admin socket answered something that is not a JSON object: {line[:200]!r}")
    return answer


EVENTS = {"validating": "validating the configuration", "draining": "draining running requests",
          "restarting": "restarting the workers",
          "rolling back": "rolling back to the previous configuration", "ready": "ready", "accepted": "reload requested (not waiting for it)"}


def progress_text(answer: dict[str, Any]) -> str:
    """`draining running requests (2 in flight)` from one progress line of the admin socket."""
    event = str(answer["event"])
    details = []
    if "in_flight" in answer:
        details.append(f"{answer['in_flight']} in flight")
    if answer.get("status"):
        details.append(str(answer["status"]))
    return EVENTS.get(event, event) + (f" ({'; '.join(details)})" if details else "")
