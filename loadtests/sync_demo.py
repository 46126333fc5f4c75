"""`make sync-demo`: the fake Zoho with N items, then one full sync of the demo service's database from it.

The database is the one `make run` uses: DATABASE_URL when set, else the embedded PostgreSQL under DATA_DIR
(started for the sync and stopped after, as `python -m server sync` does). The fake runs unthrottled on
--port (ZOHO_RATE_PER_MIN is raised for it unless set); the sync's progress goes to stderr and its one-line
summary to stdout. A service running on the same database serves the synced products at once.

    python -m loadtests.sync_demo [--items 2000] [--port 8765] [--incremental]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def start_fake(items: int, port: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`python -m tests.fakes.zoho` in its own process; (process, the ZOHO_* settings it prints)."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "tests.fakes.zoho", "--items", str(items), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    print(proc.stdout.readline().strip(), file=sys.stderr)
    env: dict[str, str] = {}
    while len(env) < 6:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("sync-demo: the fake Zoho stopped (is the port taken?)")
        key, _, value = line.strip().partition("=")
        env[key] = value
    return proc, env


def main(argv: list[str] | None = None) -> int:
    """Run the demo; the sync's exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--incremental", action="store_true", help="an incremental run instead of a full one")
    args = ap.parse_args(argv)
    fake, zoho_env = start_fake(args.items, args.port)
    try:
        env = {**os.environ, **zoho_env}
        env.setdefault("ZOHO_RATE_PER_MIN", "100000")  # the fake is unthrottled; Zoho itself allows 100
        env.setdefault("LOG_LEVEL", "WARNING")  # the progress bar and the summary, not a line per call
        cmd = [sys.executable, "-m", "server", "sync", *([] if args.incremental else ["--full"])]
        return subprocess.run(cmd, env=env, check=False).returncode
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
