"""ZOHO_SYNC_WRITE_SHARE: a run pauses after each write so that its writes take that share of its time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from server.sync.pace import PSI_CPU, RECOVER, SLOWER, SLOWEST, CpuPressure, Pacer


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
    assert pacer.paused_s == 0


def _psi(path: Path, stalled_us: int) -> None:
    """A /proc/pressure/cpu as Linux writes it, with this `some` total."""
    path.write_text(
        f"some avg10=1.00 avg60=2.00 avg300=3.00 total={stalled_us}\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )


def test_cpu_pressure_is_the_stalled_share_of_the_time_between_readings(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    _psi(psi, 1_000_000)
    pressure = CpuPressure(psi, window_s=0.1)
    time.sleep(0.02)
    _psi(psi, 1_000_000 + 40_000)
    assert pressure.since_last() is None  # not yet a window: no judgement, and the window goes on
    time.sleep(0.1)
    _psi(psi, 1_000_000 + 60_000)  # 60 ms of stall in >= 120 ms
    share = pressure.since_last()
    assert share is not None and 0 < share <= 0.5
    time.sleep(0.1)
    _psi(psi, 1_000_000 + 60_000 + 5_000_000)  # more stall than wall time (several waiting tasks): capped
    assert pressure.since_last() == 1.0
    time.sleep(0.1)
    assert pressure.since_last() == 0.0  # no stall since


def test_cpu_pressure_is_unknown_without_a_readable_file(tmp_path: Path) -> None:
    assert CpuPressure(tmp_path / "missing").since_last() is None
    garbled = tmp_path / "cpu"
    garbled.write_text("some avg10=1.00\n")
    assert CpuPressure(garbled).since_last() is None


@pytest.mark.skipif(not PSI_CPU.exists(), reason="no /proc/pressure/cpu (not Linux >= 4.20, or hidden)")
def test_this_hosts_cpu_pressure_reads_as_a_share() -> None:
    pressure = CpuPressure(window_s=0.05)
    time.sleep(0.05)
    share = pressure.since_last()
    assert share is not None and 0.0 <= share <= 1.0


def test_the_share_falls_under_pressure_and_grows_back_without() -> None:
    pacer = Pacer(0.5, pressure_limit=0.1, pressure=CpuPressure(Path("/nonexistent")))
    pacer.adapt(0.3)
    assert pacer.effective == pytest.approx(0.5 / SLOWER)
    slowed = pacer.pause_for(0.1, pacer.effective)
    assert slowed == pytest.approx(0.1 * (SLOWER * 2 - 1)) and slowed > pacer.pause_for(0.1)  # 0.2 at 1.5
    for _ in range(50):
        pacer.adapt(0.9)
    assert pacer.effective == pytest.approx(0.5 / SLOWEST)  # the floor: the run goes on, slowly
    pacer.adapt(None)  # unknown: no change
    assert pacer.effective == pytest.approx(0.5 / SLOWEST)
    pacer.adapt(0.05)
    assert pacer.effective == pytest.approx(0.5 / SLOWEST * RECOVER)
    for _ in range(100):
        pacer.adapt(0.1)  # at the limit is not above it
    assert pacer.effective == 0.5
    off = Pacer(0.5, pressure_limit=0.0)
    assert off.pressure is None
    off.adapt(1.0)
    assert off.effective == 0.5


def test_a_write_under_pressure_is_followed_by_a_longer_pause(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    _psi(psi, 0)
    pacer = Pacer(0.5, pressure_limit=0.1, pressure=CpuPressure(psi, window_s=0.04))

    async def write(stall_us: int) -> None:
        async with pacer.write():
            await asyncio.sleep(0.05)
            _psi(psi, stall_us)

    asyncio.run(write(10_000_000))  # pressure 1.0 since the pacer started
    assert pacer.effective == pytest.approx(0.5 / SLOWER)
    assert pacer.paused_s >= 0.1 and pacer.pressure_paused_s >= 0.05
    before = pacer.pressure_paused_s
    asyncio.run(write(10_000_000))  # no stall since: the share grows back
    assert pacer.effective == pytest.approx(min(0.5, 0.5 / SLOWER * RECOVER))
    assert pacer.effective < 0.5 and pacer.pressure_paused_s > before  # still below: still a longer pause
