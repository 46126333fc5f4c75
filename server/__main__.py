"""Command line: `python -m server serve | migrate | seed | sync | settings | admin-key`.

Settings are built here, once per process, and passed down. `serve` is the supervisor: it starts the
embedded PostgreSQL/Redis when their URLs are unset, migrates (once, before Robyn forks: Robyn runs start-up
handlers in every process at once and they would race), seeds an empty catalog if asked, then runs the Robyn
process tree (`_robyn`) and stops everything on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from server import log as logsetup
from server.settings import Settings, SettingsError, load_settings

log = logging.getLogger("server")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"catalog-api: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _require_build(settings: Settings) -> None:
    from core_ext import USING_COMPILED

    if not USING_COMPILED and not settings.ALLOW_PURE_PYTHON:
        print(
            "catalog-api: core_ext is the pure-Python build (slow). Build the extension "
            "(pip install .) or set ALLOW_PURE_PYTHON=true to run anyway.",
            file=sys.stderr,
        )
        raise SystemExit(3)


async def _migrate_and_seed(dsn: str, seed_products: int | None, seed_value: int, uploads: Path) -> None:
    import asyncpg

    from server.db.migrate import migrate
    from server.seed import seed

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        applied = await migrate(conn)
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))
        if seed_products is not None:
            made = await seed(
                conn, products=seed_products, seed_value=seed_value, uploads=uploads, if_empty=True
            )
            if made:
                log.info("seeded %d demo products", made)
    finally:
        await conn.close()


def _wait_and_announce(host: str, port: int, base_url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        return
    shown = f"http://{host}:{port}"
    print(
        f"\n  catalog API  {shown}/api/consumer/products\n  docs         {shown}/docs\n"
        f"  readiness    {shown}/ready\n  public base  {base_url}\n",
        file=sys.stderr,
        flush=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the service (supervisor)."""
    from server.embedded import EmbeddedPostgres, EmbeddedRedis
    from server.runner import Supervisor, port_free, worker_command

    settings = _settings()
    logsetup.configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    _require_build(settings)
    if not port_free(settings.HOST, settings.PORT):
        print(f"catalog-api: {settings.HOST}:{settings.PORT} is in use (set PORT)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    pg = redis = None
    try:
        if settings.DATABASE_URL is None:
            pg = EmbeddedPostgres(settings.DATA_DIR / "pg")
            env["DATABASE_URL"] = pg.start()
        else:
            env["DATABASE_URL"] = settings.DATABASE_URL.get_secret_value()
        if settings.REDIS_URL is None:
            redis = EmbeddedRedis(
                settings.DATA_DIR / "redis", maxmemory_mb=settings.EMBEDDED_REDIS_MAXMEMORY_MB
            )
            env["REDIS_URL"] = redis.start()
        asyncio.run(
            _migrate_and_seed(env["DATABASE_URL"], args.seed_if_empty, args.seed, settings.UPLOADS_DIR)
        )
        log.info("starting %d Robyn process(es) on %s:%d", settings.PROCESSES, settings.HOST, settings.PORT)
        supervisor = Supervisor(worker_command(), env, settings.SHUTDOWN_GRACE_S)
        announce = threading.Thread(
            target=_wait_and_announce,
            args=(settings.HOST, settings.PORT, settings.PUBLIC_BASE_URL),
            daemon=True,
        )
        code = supervisor.run(on_ready=announce.start)
        return 0 if code in (0, -2, 130) else code
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        log.info("stopped")


def cmd_robyn(_args: argparse.Namespace) -> int:
    """The Robyn master and its workers (started by `serve`; expects DATABASE_URL and REDIS_URL set)."""
    settings = _settings()
    logsetup.configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    _require_build(settings)
    if settings.DATABASE_URL is None:
        print("catalog-api: DATABASE_URL must be set for the server process", file=sys.stderr)
        return 2
    from server import workers
    from server.app import create_app
    from server.metrics.store import prepare_run_dir, remove_run_dir

    master = os.getpid()

    # One snapshot directory per run of this master, made before the workers fork (server/metrics/store.py).
    metrics_dir = None
    if settings.METRICS_ENABLED:
        base = settings.METRICS_DIR or settings.DATA_DIR / "metrics"
        try:
            metrics_dir = prepare_run_dir(base)
        except OSError as exc:
            print(f"catalog-api: METRICS_DIR {base} is not usable: {exc}", file=sys.stderr)
            return 2
    app, _state = create_app(settings, metrics_dir)
    logsetup.configure(settings.LOG_LEVEL, settings.LOG_FORMAT)  # Robyn() re-configures the root logger
    try:
        workers.serve(
            app,
            host=settings.HOST,
            port=settings.PORT,
            processes=settings.PROCESSES,
            grace_s=settings.SHUTDOWN_GRACE_S,
        )
    finally:
        if metrics_dir is not None and os.getpid() == master:
            remove_run_dir(metrics_dir)
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    """Apply migrations to DATABASE_URL (or the embedded server)."""
    return _with_database(None, 0)


def cmd_seed(args: argparse.Namespace) -> int:
    """Migrate, then fill an empty catalog with deterministic demo data."""
    return _with_database(args.products, args.seed)


def _with_database(products: int | None, seed_value: int) -> int:
    settings = _settings()
    logsetup.configure(settings.LOG_LEVEL, settings.LOG_FORMAT)

    def run(dsn: str) -> int:
        asyncio.run(_migrate_and_seed(dsn, products, seed_value, settings.UPLOADS_DIR))
        return 0

    return _on_database(settings, run)


def _on_database(settings: Settings, run: Callable[[str], int]) -> int:
    """run(dsn) against DATABASE_URL, or an embedded PostgreSQL started for the command and stopped after."""
    from server.embedded import EmbeddedPostgres

    pg = None
    try:
        if settings.DATABASE_URL is None:
            pg = EmbeddedPostgres(settings.DATA_DIR / "pg")
            dsn = pg.start()
        else:
            dsn = settings.DATABASE_URL.get_secret_value()
        return run(dsn)
    finally:
        if pg is not None:
            pg.stop()


def cmd_admin_key(args: argparse.Namespace) -> int:
    """Create, list or revoke admin API keys (server/admin/cli.py)."""
    from server.admin import cli

    return _on_database(_settings(), lambda dsn: asyncio.run(cli.run(dsn, args)))


def cmd_sync(args: argparse.Namespace) -> int:
    """One Zoho sync run (exit 0 succeeded, 1 failed, 3 paused, 4 already running)."""
    from server.sync.cli import sync_command

    settings = _settings()
    logsetup.configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    return _on_database(
        settings,
        lambda dsn: asyncio.run(
            sync_command(settings, dsn, full=args.full, announce=args.announce, traceparent=args.traceparent)
        ),
    )


def cmd_settings(_args: argparse.Namespace) -> int:
    """Print the effective settings, secrets masked."""
    for name, value in _settings().public_view().items():
        print(f"{name}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m server` and the `catalog-api` script."""
    parser = argparse.ArgumentParser(prog="catalog-api", description="Consumer catalog API")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument(
        "--seed-if-empty",
        type=int,
        metavar="N",
        default=None,
        help="seed N demo products when the catalog is empty",
    )
    serve.add_argument("--seed", type=int, default=42, help="random seed of the demo data")
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("_robyn", help=argparse.SUPPRESS).set_defaults(func=cmd_robyn)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    seed = sub.add_parser("seed", help="fill an empty catalog with demo data")
    seed.add_argument("--products", type=int, default=10_000)
    seed.add_argument("--seed", type=int, default=42)
    seed.set_defaults(func=cmd_seed)
    sync = sub.add_parser("sync", help="run one Zoho Inventory sync (exit 3: paused, 4: already running)")
    sync.add_argument("--full", action="store_true", help="read every item; deactivate those Zoho lacks")
    sync.add_argument("--announce", action="store_true", help=argparse.SUPPRESS)  # the service's child runs
    sync.add_argument("--traceparent", help=argparse.SUPPRESS)  # the trace of the request that started it
    sync.set_defaults(func=cmd_sync)
    sub.add_parser("settings", help="print effective settings (secrets masked)").set_defaults(
        func=cmd_settings
    )
    from server.admin.cli import add_parser as add_admin_key

    add_admin_key(sub).set_defaults(func=cmd_admin_key)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
