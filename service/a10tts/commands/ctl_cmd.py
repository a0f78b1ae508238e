"""`a10tts ctl status|reload|drain`: talk to the running service over its admin socket."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..config import Dirs
from ..admin_client import AdminClient, AdminError, AdminRefused, progress_text


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("ctl", help="control the running service (admin socket)")
    parser.add_argument("--runtime-dir", metavar="DIR",
                        help="runtime directory of the service (default: $A10TTS_RUNTIME_DIR, "
                             "$RUNTIME_DIRECTORY or /run/a10tts)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    status = actions.add_parser("status", help="state, profile, requests, TTFA and every child process")
    status.add_argument("--json", action="store_true", help="print the /v1/status document")
    status.set_defaults(func=_status)

    reload = actions.add_parser("reload", help="re-read the configuration; an invalid one is refused")
    reload.add_argument("--wait", action="store_true", help="show progress and return once ready again")
    reload.set_defaults(func=_reload)

    drain = actions.add_parser("drain", help="refuse new requests (503) and wait for running ones")
    drain.set_defaults(func=_drain)


def _socket(args: argparse.Namespace) -> Path:
    return Dirs.resolve(runtime_dir=args.runtime_dir).admin_socket


def _fail(message: str) -> int:
    print(f"a10tts ctl: {message}", file=sys.stderr)
    return 1


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def describe(status: dict[str, Any]) -> list[str]:
    model, server, req = status["model"], status["server"], status["requests"]
    precision = " / ".join(f"{k} {v}" for k, v in model["precision"].items())
    lines = [
        f"a10tts {status['version']}: {status['state']}"
        f" (since {time.strftime('%H:%M:%S', time.localtime(status['since']))}), profile {status['profile']}",
        f"  model     {model['dir']}{' (demo: noise)' if model['demo'] else ''} on {model['device']}, {precision}",
        f"  http      {server['host']}:{server['port']}, {server['http_workers']} worker(s)",
        f"  requests  {req['running'] or 0} running, {req['waiting'] or 0} waiting, {req['total']} total, "
        f"{req['failed']} failed, {req['per_second']:.2f}/s",
        f"  TTFA      p50 {_ms(status['ttfa_s']['p50'])}, p95 {_ms(status['ttfa_s']['p95'])} "
        f"(last {status['ttfa_s']['window_s']:.0f} s)",
    ]
    phases = status.get("ttfa_phases_p50_s") or {}
    if phases:
        lines.append("  by phase  " + ", ".join(f"{name} {_ms(seconds)}" for name, seconds in phases.items())
                     + " (p50 of each)")
    lines.append("  children:")
    for stage in status["stages"]:
        age = stage["heartbeat_age_s"]
        health = ("ready" if stage["ready"] else "loading") if stage["alive"] else "dead"
        name = f"{stage['stage']}-{stage['index']}"
        heartbeat = "-" if age is None else f"{age:.1f} s"
        lines.append(f"    {name:<10} pid {stage['pid']!s:<8} {health:<8} heartbeat {heartbeat:<7} "
                     f"restarts {stage['restarts']}")
    return lines


def _status(args: argparse.Namespace) -> int:
    try:
        answer = next(AdminClient(_socket(args), timeout_s=10).request({"cmd": "status"}))
    except AdminError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(answer["status"], indent=2))
    else:
        print("\n".join(describe(answer["status"])))
    return 0


def reload_service(admin_socket: Path, message: dict[str, Any]) -> int:
    """Send a reload (or profile) request and print its progress; exit status 0 only when applied."""
    try:
        for answer in AdminClient(admin_socket).request(message):
            if "event" in answer:
                print(progress_text(answer))
            if answer.get("done"):
                if answer.get("restarted") is False:
                    print(f"no setting changed; profile '{answer['profile']}' is active")
                elif "profile" in answer:
                    print(f"reloaded; profile '{answer['profile']}' is active")
    except AdminRefused as exc:
        return _fail(f"reload refused: {exc}")
    except AdminError as exc:
        return _fail(str(exc))
    return 0


def _reload(args: argparse.Namespace) -> int:
    return reload_service(_socket(args), {"cmd": "reload", "wait": args.wait})


def _drain(args: argparse.Namespace) -> int:
    try:
        answer = next(AdminClient(_socket(args)).request({"cmd": "drain"}))
    except AdminError as exc:
        return _fail(str(exc))
    if not answer.get("drained"):
        return _fail(f"still {answer.get('in_flight')} request(s) in flight; new requests get 503")
    print("drained: no request in flight; new requests get 503 until `a10tts ctl reload`")
    return 0
