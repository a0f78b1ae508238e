"""Keeping systemd informed while time passes: WATCHDOG=1 pings and EXTEND_TIMEOUT_USEC.

WATCHDOG=1 goes out only while every child's heartbeat is fresh. Children beat from their main
loops, so a hung GPU worker (or a hung supervisor loop) stops the pings and systemd restarts
the unit after WatchdogSec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from .sd_notify import Notifier

log = logging.getLogger(__name__)

EXTEND_EVERY_S, EXTEND_BY_S = 5.0, 30.0


async def ping_while_healthy(notifier: Notifier, stale_children: Callable[[], list[str]]) -> None:
    """Ping at half of WatchdogSec while `stale_children()` is empty; log once per outage."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return
    outage = False
    while True:
        stale = stale_children()
        if not stale:
            notifier.watchdog()
            outage = False
        elif not outage:
            log.error("no WATCHDOG=1 until these children beat again: %s", ", ".join(stale))
            outage = True
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def extending_start_timeout(notifier: Notifier) -> AsyncIterator[None]:
    """Keep systemd's start (or reload) timeout ahead while children load: a slow start that
    makes progress is not cut short, a hung supervisor still is."""
    async def extend() -> None:
        while True:
            notifier.extend_timeout(EXTEND_BY_S)
            await asyncio.sleep(EXTEND_EVERY_S)

    task = asyncio.get_running_loop().create_task(extend())
    try:
        yield
    finally:
        task.cancel()
