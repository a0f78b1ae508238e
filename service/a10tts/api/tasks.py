"""Stopping asyncio tasks for sure."""

from __future__ import annotations

import asyncio


async def cancel_all(*tasks: asyncio.Future) -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again while any still runs.

    Before Python 3.12, ``asyncio.wait_for`` can swallow a cancellation that arrives just as its
    awaitable completes (bpo-42130). A task caught that way runs on to its next await (a
    bistream reader then blocked on the queue of a writer that had failed), so one ``cancel``
    and a ``gather`` can wait forever.
    """
    while True:
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=0.05)
        if not pending:
            break
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the caller already acted on the first failure
