"""ZOHO_SYNC_WRITE_SHARE: a run pauses after each write so that its writes take that share of its time."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.sync.pace import Pacer


def test_pause_follows_the_write_time() -> None:
    assert Pacer(0.5).pause_for(0.2) == pytest.approx(0.2)
    assert Pacer(0.25).pause_for(0.2) == pytest.approx(0.6)
    assert Pacer(1.0).pause_for(3.0) == 0.0
    assert Pacer(0.5, max_pause_s=1.0).pause_for(4.0) == 1.0  # one long write: a bounded pause
    assert Pacer(0.5).pause_for(-1.0) == 0.0  # a clock step back
    for share in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="write share"):
            Pacer(share)


def test_a_timed_block_is_followed_by_its_pause() -> None:
    async def scenario() -> tuple[float, float]:
        pacer = Pacer(0.5)
        started = time.monotonic()
        async with pacer.write():
            await asyncio.sleep(0.1)
        return time.monotonic() - started, pacer.paused_s

    took, paused = asyncio.run(scenario())
    assert paused >= 0.1 and took >= 0.2 - 0.005


def test_no_pause_after_a_block_that_raised() -> None:
    pacer = Pacer(0.1)

    async def scenario() -> None:
        async with pacer.write():
            await asyncio.sleep(0.05)
            raise RuntimeError("the run ends")

    with pytest.raises(RuntimeError, match="the run ends"):
        asyncio.run(scenario())
    assert pacer.paused_s == 0 and pacer.writes == 0
