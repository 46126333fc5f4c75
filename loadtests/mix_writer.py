"""The writer of bench_mix.py: stock updates to random active products at a fixed rate, one UPDATE per
transaction (what an ERP sync sends), as its own process beside the load.

    python -m loadtests.mix_writer DSN [--rate 20] [--seconds 10] [--seed 1]

Prints `ready` once connected, then one JSON line: commits, seconds, rate, late_max_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
STOCK_UPDATE = "UPDATE products SET stock_on_hand = $1 WHERE id = $2"


async def write(dsn: str, rate: float, seconds: float, seed: int) -> dict[str, float]:
    """Commit at `rate` for `seconds` on a fixed schedule; the achieved figures."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM products WHERE is_active")]
        rnd = random.Random(seed)
        print("ready", flush=True)
        start = time.perf_counter()
        commits, late_max = 0, 0.0
        while True:
            due = start + commits / rate  # a fixed schedule: a slow commit is caught up, not dropped
            now = time.perf_counter()
            if due - start >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            else:
                late_max = max(late_max, now - due)
            # Autocommit: each statement is its own transaction, as an ERP sync would send them.
            await conn.execute(STOCK_UPDATE, rnd.randint(0, 500), rnd.choice(ids))
            commits += 1
        elapsed = time.perf_counter() - start
        return {
            "commits": commits,
            "seconds": elapsed,
            "rate": commits / elapsed,
            "late_max_ms": late_max * 1e3,
        }
    finally:
        await conn.close()


class Writer:
    """The writer as a separate process (inheriting the load cores)."""

    def __init__(self, dsn: str, rate: float, seconds: float, seed: int) -> None:
        cmd = [sys.executable, "-m", "loadtests.mix_writer", dsn]
        cmd += ["--rate", str(rate), "--seconds", str(seconds), "--seed", str(seed)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise SystemExit(f"mix_writer: the writer did not start ({line or 'no output'})")

    def result(self) -> dict[str, float]:
        """Wait for the writer's figures."""
        out, _ = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise SystemExit(f"mix_writer: the writer failed ({self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m loadtests.mix_writer", description=__doc__.splitlines()[0])
    p.add_argument("dsn")
    p.add_argument("--rate", type=float, default=20.0, help="commits per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(write(args.dsn, args.rate, args.seconds, args.seed))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
