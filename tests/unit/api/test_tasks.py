"""Stopping asyncio tasks for sure."""

from __future__ import annotations

import asyncio

import pytest

from a10tts.api.tasks import cancel_all


@pytest.mark.asyncio
async def test_cancel_all_outlasts_a_swallowed_cancellation():
    never = asyncio.Event()

    async def swallows_one_cancel():  # what wait_for can do before Python 3.12
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        await never.wait()  # then blocks, as the reader did on a full queue

    async def fails():
        raise RuntimeError("writer failed")

    stubborn, failed = asyncio.ensure_future(swallows_one_cancel()), asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all(stubborn, failed), timeout=5)
    assert stubborn.cancelled() and failed.done()
