"""Suite-wide fixtures: real PostgreSQL and Redis (embedded by default, or TEST_DATABASE_URL /
TEST_REDIS_URL), a migrated and seeded template database, and the real server as a subprocess over HTTP.
Helpers live in catalog_testlib (importable by test modules; conftest modules are not).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from catalog_testlib import (
    SEED_PRODUCTS,
    TEMPLATE,
    Database,
    ServerProcess,
    Services,
    admin_sql,
    drop_database,
    make_database,
    run,
)


def pytest_configure(config: pytest.Config) -> None:
    """With CATALOG_TEST_INSTALLED=1 the suite must test the installed wheel, never the source tree."""
    if os.environ.get("CATALOG_TEST_INSTALLED") == "1":
        import core_ext
        import server

        for mod in (core_ext, server):
            where = Path(mod.__file__ or "").resolve()
            if "site-packages" not in where.parts:
                raise pytest.UsageError(
                    f"{mod.__name__} imported from the source tree ({where}), not the wheel"
                )


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Real servers: TEST_DATABASE_URL/TEST_REDIS_URL, else embedded ones in a temp folder."""
    from server.embedded import EmbeddedPostgres, EmbeddedRedis

    pg = redis = None
    admin = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    # Not under pytest's tmp dirs: the embedded PostgreSQL runs as another user (pgserver does that when
    # started by root) and needs a world-traversable path that no concurrent pytest session prunes.
    base = Path(tempfile.mkdtemp(prefix="catalog-test-services-"))
    base.chmod(0o755)
    try:
        if not admin:
            pg = EmbeddedPostgres(base / "pg")
            pg.start()
            admin = pg.admin_url()
        if not redis_url:
            redis = EmbeddedRedis(base / "redis")
            redis_url = redis.start()
        yield Services(admin, redis_url)
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(services: Services, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A migrated, seeded database used as the template of every test database, and its uploads."""
    from server.db.migrate import migrate
    from server.seed import seed

    uploads = tmp_path_factory.mktemp("template_uploads")

    async def build() -> None:
        await admin_sql(services, f"CREATE DATABASE {TEMPLATE}")
        conn = await asyncpg.connect(services.db_url(TEMPLATE))
        try:
            await migrate(conn)
            await seed(conn, products=SEED_PRODUCTS, seed_value=7, uploads=uploads)
        finally:
            await conn.close()

    run(build())
    yield TEMPLATE, uploads
    run(admin_sql(services, f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))


@pytest.fixture(scope="module")
def database(
    services: Services, template_db: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    """This module's own database (copied from the template)."""
    db = make_database(services, template_db, tmp_path_factory.mktemp("db"))
    yield db
    drop_database(db)


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One running server per test module, on the module's database."""
    proc = ServerProcess(database, services, tmp_path_factory.mktemp("srv")).start()
    yield proc
    proc.stop()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client for the module's server."""
    with server.client() as client:
        yield client
