"""Database faults reach shoppers as 503 + Retry-After, never as a 500 or an unbounded queue; connections
that saw a fault are replaced. Real PostgreSQL, real server, real sockets (a relay stands in for a slow
network where the test needs one)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database

PRODUCTS = "/api/consumer/products"
APP = "catalog-api"  # application_name of the service's pool connections


def assert_unavailable(resp: httpx.Response) -> None:
    """A 503 in our error format with Retry-After."""
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "service_unavailable"


async def backends(db: Database, where: str = "") -> list[asyncpg.Record]:
    """The service's pool backends on this database (from a separate session)."""
    return await db.fetch(
        "SELECT pid, state, wait_event_type FROM pg_stat_activity "
        f"WHERE datname = current_database() AND application_name = '{APP}' {where}"
    )


@pytest.fixture(scope="module")
def small_pool(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One process with a two-connection pool, a short acquire timeout, no page cache and no row stores
    (every request reaches the database)."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("small"),
        PROCESSES=1,
        DB_POOL_MIN=1,
        DB_POOL_MAX=2,
        DB_ACQUIRE_TIMEOUT_S=3,
        DB_COMMAND_TIMEOUT_S=5,
        CACHE_ENABLED="false",
        ROW_STORE_MB="0",
    ).start()
    yield proc
    proc.stop()


def test_full_pool_answers_503_instead_of_queueing(small_pool: ServerProcess, database: Database) -> None:
    """`products` locked: two requests hold the pool's connections, the rest get 503 after the acquire
    timeout (not when the lock goes); /ready shows the waiters; the statements cut by the command timeout
    are cancelled on the server and their connections reused; after the unlock everything is 200."""

    async def go() -> None:
        locker = await asyncpg.connect(database.url)
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        try:
            async with httpx.AsyncClient(base_url=small_pool.base_url, timeout=30) as client:
                started = time.monotonic()
                tasks = [
                    asyncio.create_task(client.get(PRODUCTS, params={"page": i + 1, "page_size": 3}))
                    for i in range(8)
                ]
                await asyncio.sleep(0.3)
                ready = (await client.get("/ready")).json()  # waits its own 1 s for a connection
                pool = ready["database"]["pool"]
                assert pool["in_use"] == 2, pool
                assert pool["waiters"] >= 5, pool  # six requests queue behind two busy connections
                done, pending = await asyncio.wait(tasks, timeout=9)
                assert not pending, "requests kept waiting for a connection"
                elapsed = time.monotonic() - started
                for task in done:  # 6 x acquire timeout (3 s), 2 x command timeout (5 s)
                    assert_unavailable(task.result())
                assert elapsed < 9
                # The timed-out statements were cancelled on the server, not left waiting on the lock.
                for _ in range(50):
                    if not await backends(database, "AND wait_event_type = 'Lock'"):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("a cancelled statement still waits on the lock")
            await tx.rollback()
            async with httpx.AsyncClient(base_url=small_pool.base_url, timeout=10) as client:
                answers = await asyncio.gather(
                    *(client.get(PRODUCTS, params={"page": i + 1, "page_size": 3}) for i in range(8))
                )
                assert [r.status_code for r in answers] == [200] * 8
                usage = (await client.get("/ready")).json()["database"]["pool"]
            assert usage["waiters"] == 0
            assert usage["acquire_timeouts"] >= 6
            assert usage["discarded"] == 0  # cancelled statements leave reusable connections
            assert usage["size"] <= 2
        finally:
            await locker.close()

    asyncio.run(go())


def test_terminated_backends_under_load_give_200_or_503_then_200(
    database: Database, services: Services, tmp_path: Path
) -> None:
    """pg_terminate_backend on every connection of the service, repeatedly, while clients read uncached
    pages: only 200 or 503 (never 500), then everything is 200 again on fresh connections, and the
    catalog listener is back (/ready)."""
    proc = ServerProcess(
        database,
        services,
        tmp_path,
        PROCESSES=2,
        DB_POOL_MIN=2,
        DB_POOL_MAX=4,
        CACHE_ENABLED="false",
        ROW_STORE_MB="0",
    ).start()
    try:

        async def go() -> Counter[int]:
            statuses: Counter[int] = Counter()
            stop = asyncio.Event()

            async def shopper(client: httpx.AsyncClient, n: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    params = {"page": (n * 7 + i) % 40 + 1, "page_size": 5, "sort": "-price"}
                    resp = await client.get(PRODUCTS, params=params)
                    statuses[resp.status_code] += 1
                    if resp.status_code == 503:
                        assert_unavailable(resp)

            async def terminator() -> None:
                admin = await asyncpg.connect(database.url)
                try:
                    for _ in range(15):
                        await admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND application_name LIKE 'catalog-%'"
                        )
                        await asyncio.sleep(0.2)
                finally:
                    await admin.close()
                    stop.set()

            async with httpx.AsyncClient(base_url=proc.base_url, timeout=20) as client:
                await asyncio.gather(terminator(), *(shopper(client, n) for n in range(8)))
            return statuses

        statuses = asyncio.run(go())
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0
        with proc.client() as client:
            deadline = time.monotonic() + 10
            while client.get("/ready").json().get("status") != "ready":  # the listener reconnects
                assert time.monotonic() < deadline, client.get("/ready").text
                time.sleep(0.1)
            answers = [client.get(PRODUCTS, params={"page": p, "page_size": 5}) for p in range(1, 21)]
            assert [r.status_code for r in answers] == [200] * 20
        assert "unhandled error" not in proc.log()  # 500s are logged so; asyncpg may log retries
    finally:
        proc.stop()


class HalfOpenRelay:
    """A TCP relay to PostgreSQL that keeps the client side open for `hold_s` after the server closed:
    what a slow or lossy network does to a FATAL followed by the close (the service reads the error
    long before it sees the end of the stream)."""

    def __init__(self, target_url: str, hold_s: float) -> None:
        parts = urlsplit(target_url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self.unix_path = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir.startswith("/") else ""
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 5432
        self.hold_s = hold_s
        self.listen_port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping: asyncio.Event | None = None

    def start(self) -> HalfOpenRelay:
        """Listen on a free port of 127.0.0.1 (in a thread with its own event loop)."""
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self) -> None:
        """Stop relaying and close every socket."""
        assert self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.listen_port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.unix_path:
            server_r, server_w = await asyncio.open_unix_connection(self.unix_path)
        else:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
        self._writers.update((client_w, server_w))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: float) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            await asyncio.sleep(hold)
            dst.close()
            with contextlib.suppress(OSError):
                await dst.wait_closed()

        await asyncio.gather(pump(client_r, server_w, 0), pump(server_r, client_w, self.hold_s))


def test_connection_that_saw_a_fatal_is_discarded_not_reused(
    services: Services, template_db: tuple[str, Path], tmp_path: Path
) -> None:
    """The review's 500: PostgreSQL's FATAL (here from pg_terminate_backend) reaches an idle pool
    connection before the socket closes; reused, it fails with "cannot switch to state 12; another
    operation (2) is in progress". Now that is a 503 and the connection is terminated, so the next
    requests run on new connections while the old sockets are still open."""
    db = make_database(services, template_db, tmp_path)
    relay = HalfOpenRelay(db.url, hold_s=5).start()
    parts = urlsplit(db.url)
    userinfo = parts.netloc.rpartition("@")[0]
    via_relay = f"postgresql://{userinfo + '@' if userinfo else ''}127.0.0.1:{relay.listen_port}{parts.path}"
    proc = ServerProcess(
        db,
        services,
        tmp_path,
        PROCESSES=1,
        DB_POOL_MIN=2,
        DB_POOL_MAX=2,
        CACHE_ENABLED="false",
        ROW_STORE_MB="0",
    )
    proc.env["DATABASE_URL"] = via_relay
    proc.start()
    try:
        with proc.client() as client:
            for p in range(1, 5):  # both pool connections in use at least once
                assert client.get(PRODUCTS, params={"page": p, "page_size": 5}).status_code == 200
            asyncio.run(
                db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = current_database() AND application_name = '{APP}'"
                )
            )
            time.sleep(0.3)  # the FATALs arrive; the relay keeps the sockets open for 5 s
            started = time.monotonic()
            answers = [client.get(PRODUCTS, params={"page": p, "page_size": 5}) for p in range(1, 9)]
            within_hold = time.monotonic() - started < 4
            statuses = [r.status_code for r in answers]
            assert 500 not in statuses, statuses
            for resp in answers:
                if resp.status_code == 503:
                    assert_unavailable(resp)
            # At most one failure per poisoned connection, then fresh connections serve.
            assert statuses.count(503) <= 2, statuses
            assert statuses[-4:] == [200] * 4, statuses
            assert within_hold, "the test was too slow to prove the old sockets were not waited for"
            usage = client.get("/ready").json()["database"]["pool"]
            assert usage["discarded"] == statuses.count(503)
    finally:
        proc.stop()
        relay.stop()
        drop_database(db)
