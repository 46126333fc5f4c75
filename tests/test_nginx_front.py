"""nginx in front of the real service (`python -m server.nginx`, the config of docs/nginx.conf with local
values): slow clients and huge bodies end at nginx, whatever nginx answers itself is problem+json, and normal
requests pass through with our headers, gzip, X-Forwarded-For and X-Request-ID intact."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from catalog_testlib import Database, ServerProcess, Services, free_port, launch, stop_tree, wait_ready

from server.errors import (
    AppError,
    BadGateway,
    BadRequest,
    HeaderTooLarge,
    HttpVersionNotSupported,
    MethodNotAllowed,
    NotFound,
    NotImplementedFeature,
    PayloadTooLarge,
    UnsupportedMediaType,
    UriTooLong,
)
from server.nginx import PRODUCTION, EdgeSettings, Front, find_nginx, render_front

NGINX = find_nginx(os.environ.get("EDGE_NGINX", "nginx"))  # EDGE_NGINX=/nope: see the skips
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx binary not found on PATH or in /usr/sbin (apt-get install nginx-light)"
)
DOCS_CONF = Path(__file__).resolve().parent.parent / "docs" / "nginx.conf"
README = Path(__file__).resolve().parent.parent / "README.md"
PRODUCTS = "/api/consumer/products"
TIMEOUT_S = 2  # the test front's header and body timeouts (production: 10 s)
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "title_ar", "detail_ar", "request_id"}


class EdgeProcess:
    """`python -m server.nginx` in front of HOST:PORT, as a subprocess."""

    def __init__(self, workdir: Path, upstream_port: int, *args: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.access_log = workdir / "data" / "edge" / "access.log"
        self.log_path = workdir / f"edge-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST"))},
            "HOST": "127.0.0.1",
            "PORT": str(upstream_port),
            "EDGE_PORT": str(self.port),
            "EDGE_HEADER_TIMEOUT_S": str(TIMEOUT_S),
            "EDGE_BODY_TIMEOUT_S": str(TIMEOUT_S),
            "DATA_DIR": str(workdir / "data"),
        }
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/health", timeout: float = 60) -> EdgeProcess:
        """Start and wait until nginx answers (ready_path 200 through it, or any answer if empty)."""

        def ready() -> bool:
            status = httpx.get(self.base_url + (ready_path or "/"), timeout=1).status_code
            return status == 200 or not ready_path

        argv = [sys.executable, "-m", "server.nginx", *self.args]
        self.proc = launch(argv, self.workdir, self.env, self.log_path)
        wait_ready(self.proc, ready, timeout, "edge", self.log, self.stop)
        return self

    def log(self) -> str:
        """What the runner and nginx wrote (nginx's error log goes to stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_line(self, request_id: str) -> str:
        """nginx's access log line of the request with this id."""
        for _ in range(50):  # nginx writes the line right after the response; allow it a moment
            lines = [ln for ln in self.access_log.read_text().splitlines() if f" rid={request_id} " in ln]
            if lines:
                assert len(lines) == 1, lines
                return lines[0]
            time.sleep(0.05)
        raise AssertionError(f"no access log line for {request_id}")

    def stop(self) -> int:
        """SIGTERM the runner; its exit code."""
        assert self.proc is not None
        stop_tree(self.proc, signal.SIGTERM, 30)
        return self.proc.returncode


class Raw:
    """One HTTP/1.1 exchange over a plain socket (for what httpx will not send)."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}


def raw(port: int, request: bytes) -> Raw:
    """Send bytes, read until the server closes (requests here end with `Connection: close` or an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return Raw(out)


def check_problem(status: int, headers: dict[str, str] | httpx.Headers, body: bytes, error: AppError) -> None:
    """nginx's answer is exactly what server/errors.py renders, with the headers the API sends."""
    assert status == error.status
    assert headers["content-type"] == "application/problem+json"
    request_id = headers["x-request-id"]
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", request_id)
    doc = orjson.loads(body)
    assert set(doc) == PROBLEM_KEYS
    assert doc["request_id"] == request_id
    assert body == error.body(request_id)  # byte for byte: same texts, en + ar
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


def rss(proc: subprocess.Popen[bytes]) -> int:
    """Resident memory of a process tree, bytes."""
    root = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in (root, *root.children(recursive=True)))


@pytest.fixture(scope="module")
def service(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The real service, believing nginx's X-Forwarded-For, with a quota to see whose it counts."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("svc"),
        TRUSTED_PROXIES="127.0.0.1/32",
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_CATALOG="100/3600s",
        PROCESSES="1",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(service: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """nginx in front of the service."""
    if NGINX is None:
        pytest.skip("nginx binary not found on PATH or in /usr/sbin (apt-get install nginx-light)")
    proc = EdgeProcess(tmp_path_factory.mktemp("edge"), service.port).start()
    yield proc
    proc.stop()


# -- the config: one template, documented and run ---------------------------------------------------------


@pytest.mark.skipif(not DOCS_CONF.exists(), reason="docs/ not next to the tests")
def test_docs_config_is_the_rendered_template() -> None:
    assert DOCS_CONF.read_text(encoding="utf-8") == render_front(PRODUCTION), (
        "docs/nginx.conf drifted: regenerate with `python -m server.nginx --production > docs/nginx.conf`"
    )


@pytest.mark.skipif(not README.exists(), reason="README not next to the tests")
def test_edge_settings_are_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [name for name in EdgeSettings.model_fields if f"`{name}`" not in text]
    assert not missing, f"settings missing from README's configuration table: {missing}"
    assert "make run-edge" in text


def directives(conf: str) -> list[str]:
    """The directive names of a config, in order (values and comments left out)."""
    out = []
    for line in conf.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith(("'", '"')):
            out.append(line.split()[0])
    return out


def test_runnable_config_has_the_production_directives() -> None:
    local = Front(
        listen="127.0.0.1:18080",
        upstream="127.0.0.1:18000",
        header_timeout_s=2,
        body_timeout_s=3,
        max_body_bytes=2 << 20,
        max_header_bytes=8192,
        access_log="access.log",
    )
    ours, theirs = render_front(local), render_front(PRODUCTION)
    assert directives(ours) == directives(theirs)
    assert "listen 127.0.0.1:18080;" in ours and "server 127.0.0.1:18000 " in ours
    assert "client_header_timeout 2s;" in ours and "client_max_body_size 2m;" in ours
    assert "large_client_header_buffers 4 8k;" in ours
    assert "client_header_timeout 10s;" in theirs and "client_max_body_size 1m;" in theirs


@needs_nginx
def test_production_config_passes_nginx_t(tmp_path: Path) -> None:
    assert NGINX is not None
    conf = render_front(replace(PRODUCTION, access_log=str(tmp_path / "access.log")))
    (tmp_path / "front.conf").write_text(conf, encoding="utf-8")
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n"
        + "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy"))
        + "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("fastcgi", "uwsgi", "scgi"))
        + f"    include {tmp_path}/front.conf;\n}}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


# -- item 9: slow clients and huge bodies end at nginx -------------------------------------------------------


def open_stalled(port: int, data: bytes) -> socket.socket:
    """A connection that sent `data` and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the peer closed (or reset) the connection within `seconds`, whatever it sent before."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


@needs_nginx
def test_stalled_header_sections_are_cut_by_nginx(edge: EdgeProcess, service: ServerProcess) -> None:
    partial = f"GET {PRODUCTS} HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n".encode()  # no blank line: never ends
    via_edge = [open_stalled(edge.port, partial) for _ in range(20)]
    direct = open_stalled(service.port, partial)
    try:
        started = time.monotonic()
        # nginx closes each after client_header_timeout (2 s here); 10 s leaves room for a loaded machine.
        assert all(closed_within(sock, 10) for sock in via_edge)
        print(f"\n20 stalled header sections closed by nginx after {time.monotonic() - started:.1f} s")
        # Robyn alone still holds its one: this is what nginx is for.
        assert not closed_within(direct, 0.5)
    finally:
        for sock in (*via_edge, direct):
            sock.close()


@needs_nginx
def test_stalled_bodies_are_cut_and_never_reach_the_service(edge: EdgeProcess) -> None:
    declared = open_stalled(
        edge.port,
        f"GET {PRODUCTS} HTTP/1.1\r\nHost: t\r\nX-Request-ID: stall-cl\r\n"
        "Content-Length: 100\r\n\r\nabc".encode(),
    )
    chunked = open_stalled(
        edge.port,
        f"GET {PRODUCTS} HTTP/1.1\r\nHost: t\r\nX-Request-ID: stall-chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".encode(),
    )
    try:
        assert closed_within(declared, 10) and closed_within(chunked, 10)
    finally:
        declared.close()
        chunked.close()
    for rid in ("stall-cl", "stall-chunked"):
        assert " upstream=- " in edge.access_line(rid)  # nginx never opened the upstream for it


def send_huge(port: int, head: bytes, total: int, chunked: bool) -> tuple[Raw, int]:
    """Stream up to `total` body bytes (64 KiB at a time, never held) until nginx answers; the answer and
    how many bytes went out."""
    piece = b"x" * 65536
    frame = (b"10000\r\n" + piece + b"\r\n") if chunked else piece
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break  # nginx answered: stop sending
            if writable:
                try:
                    sent += sock.send(frame)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        sock.settimeout(10)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
                head_end = out.find(b"\r\n\r\n")
                if head_end >= 0 and len(out) >= head_end + 4 + int(Raw(out).headers["content-length"]):
                    break
        except ConnectionResetError:
            pass
    return Raw(out), sent


@needs_nginx
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_100mb_body_gets_413_from_nginx_and_never_reaches_the_service(
    edge: EdgeProcess, service: ServerProcess, chunked: bool
) -> None:
    assert service.proc is not None
    total = 100 << 20
    rid = f"huge-{'chunked' if chunked else 'declared'}"
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = f"POST {PRODUCTS} HTTP/1.1\r\nHost: t\r\nX-Request-ID: {rid}\r\n{framing}\r\n\r\n".encode()
    before = rss(service.proc)
    resp, sent = send_huge(edge.port, head, total, chunked)
    grown = rss(service.proc) - before
    print(f"\n{rid}: 413 after {sent / 1e6:.1f} MB sent; service RSS {grown / 1e6:+.1f} MB")
    check_problem(resp.status, resp.headers, resp.body, PayloadTooLarge())
    assert resp.headers["x-request-id"] == rid
    assert sent < total
    assert " upstream=- " in edge.access_line(rid)  # never forwarded
    assert grown < 30 << 20  # Robyn buffering it would have taken 100+ MB


# -- item 9: what passes through is intact ------------------------------------------------------------------


@needs_nginx
def test_get_passes_through_with_gzip_and_our_headers(edge: EdgeProcess, service: ServerProcess) -> None:
    url = f"{PRODUCTS}?page=2&page_size=20&sort=-price"
    direct = httpx.get(service.base_url + url, headers={"Accept-Encoding": "gzip"})
    resp = httpx.get(edge.base_url + url, headers={"Accept-Encoding": "gzip", "X-Request-ID": "trace-abc.1"})
    assert resp.status_code == 200
    assert resp.headers["content-encoding"] == "gzip"  # the API's gzip, not undone or redone
    assert resp.headers["etag"] == direct.headers["etag"]
    assert resp.content == direct.content  # httpx undid the gzip of both
    assert "Accept-Encoding" in resp.headers["vary"]
    assert resp.headers["x-request-id"] == "trace-abc.1"
    for name in ("ratelimit", "ratelimit-policy", "content-security-policy", "x-content-type-options"):
        assert resp.headers[name]
    assert resp.headers["server"] == "nginx"  # no version
    again = httpx.get(
        edge.base_url + url, headers={"Accept-Encoding": "gzip", "If-None-Match": resp.headers["etag"]}
    )
    assert again.status_code == 304


@needs_nginx
def test_request_id_is_one_id_in_both_logs(edge: EdgeProcess) -> None:
    none_given = httpx.get(edge.base_url + "/health")
    rid = none_given.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert '"GET /health HTTP/1.1" 200 ' in edge.access_line(rid)  # nginx's id is the one the API used
    malformed = httpx.get(edge.base_url + "/health", headers={"X-Request-ID": "not ok!"})
    assert re.fullmatch(r"[0-9a-f]{32}", malformed.headers["x-request-id"])
    edge.access_line(malformed.headers["x-request-id"])


@needs_nginx
def test_forwarded_for_from_nginx_is_the_rate_limit_key(edge: EdgeProcess) -> None:
    def remaining(client: str) -> int:
        resp = httpx.get(edge.base_url + PRODUCTS, headers={"X-Forwarded-For": client})
        assert resp.status_code == 200
        found = re.fullmatch(r'"catalog";r=(\d+);t=\d+', resp.headers["ratelimit"])
        assert found, resp.headers["ratelimit"]
        return int(found.group(1))

    first = remaining("203.0.113.7")
    second = remaining("203.0.113.7")
    other = remaining("203.0.113.8")
    # One quota per client behind nginx (with one key for all, `other` would be below `second`).
    assert second < first
    assert other > second


# -- item 14: nginx's own answers in the API's error format --------------------------------------------------


@needs_nginx
@pytest.mark.parametrize("method", ["QUERY", "PROPFIND", "TRACE", "CONNECT", "BREW", "MKCOL"])
def test_unknown_methods_get_a_problem_405(edge: EdgeProcess, method: str) -> None:
    resp = raw(edge.port, f"{method} {PRODUCTS} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    check_problem(resp.status, resp.headers, resp.body, MethodNotAllowed())
    assert resp.headers["allow"] == "GET, HEAD, OPTIONS"


@needs_nginx
@pytest.mark.parametrize(
    ("method", "content_type"),
    [
        ("GET", "multipart/form-data"),
        ("GET", "multipart/form-data; boundary=abc"),
        ("GET", "Multipart/Mixed"),
        ("OPTIONS", "multipart/form-data"),
        ("POST", "multipart/form-data"),
        ("POST", "multipart/form-data; boundary="),
        ("PUT", "multipart/form-data; charset=utf-8"),
    ],
)
def test_multipart_without_boundary_or_on_get_is_a_problem_415(
    edge: EdgeProcess, method: str, content_type: str
) -> None:
    resp = raw(
        edge.port,
        f"{method} {PRODUCTS} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode(),
    )
    check_problem(resp.status, resp.headers, resp.body, UnsupportedMediaType())


@needs_nginx
def test_head_with_multipart_gets_415_headers_only(edge: EdgeProcess) -> None:
    resp = raw(
        edge.port,
        f"HEAD {PRODUCTS} HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert resp.status == 415 and resp.body == b""
    assert resp.headers["content-type"] == "application/problem+json"


@needs_nginx
def test_robyn_text_500_becomes_a_problem_and_api_errors_pass_through(edge: EdgeProcess) -> None:
    bad = b"--other\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--other--\r\n"
    resp = httpx.post(
        edge.base_url + PRODUCTS, content=bad, headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    # Robyn's multipart parser fails before any handler and answers 500 text/plain; nginx replaces it.
    check_problem(resp.status_code, resp.headers, resp.content, AppError())
    good = b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--xyz--\r\n"
    api = httpx.post(
        edge.base_url + PRODUCTS, content=good, headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    # The API's own 405 is not replaced: its Allow and RateLimit headers arrive.
    assert api.status_code == 405 and api.json()["code"] == "method_not_allowed"
    assert api.headers["allow"] == "GET, HEAD, OPTIONS" and api.headers["ratelimit"]


@needs_nginx
@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", UriTooLong()),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", HeaderTooLarge()),
        (b"get / HTTP/1.1\r\nHost: t\r\n\r\n", BadRequest()),
        (b"GET / HTTP/1.1\r\n\r\n", BadRequest()),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", BadRequest()),
        (b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", NotImplementedFeature()),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", HttpVersionNotSupported()),
        (b"GET /.edge/problem HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", NotFound()),
    ],
    ids=["414", "431", "400-method", "400-host", "400-header", "501", "505", "404-internal"],
)
def test_nginx_own_errors_are_problems(edge: EdgeProcess, request_bytes: bytes, error: AppError) -> None:
    resp = raw(edge.port, request_bytes)
    check_problem(resp.status, resp.headers, resp.body, error)


@needs_nginx
def test_service_down_is_a_problem_502(tmp_path: Path) -> None:
    front = EdgeProcess(tmp_path, free_port()).start(ready_path="")  # nothing listens upstream
    try:
        resp = httpx.get(front.base_url + PRODUCTS)
        check_problem(resp.status_code, resp.headers, resp.content, BadGateway())
        assert resp.headers["retry-after"] == "1"
    finally:
        assert front.stop() == 0


# -- the runner ----------------------------------------------------------------------------------------------


@needs_nginx
def test_run_edge_serves_through_nginx_and_stops_cleanly_on_sigterm(
    database: Database, services: Services, tmp_path: Path
) -> None:
    service_port = free_port()
    front = EdgeProcess(tmp_path, service_port, "--with-service")
    front.env.update(
        DATABASE_URL=database.url,
        REDIS_URL=services.redis_url,
        REDIS_KEY_PREFIX=f"t{database.name[-10:]}e:",
        PROCESSES="1",
        UPLOADS_DIR=str(database.uploads),
        RATE_LIMIT_ENABLED="true",
    )
    front.start(ready_path="/ready")
    assert front.proc is not None
    try:
        page = httpx.get(front.base_url + PRODUCTS, headers={"X-Forwarded-For": "198.51.100.9"})
        assert page.status_code == 200
        image_urls = [i["image_url"] for i in page.json()["items"] if i["image_url"]]
        assert image_urls and all(u.startswith(front.base_url + "/") for u in image_urls)
        tree = psutil.Process(front.proc.pid).children(recursive=True)
        assert any(p.name() == "nginx" for p in tree)
    finally:
        code = front.stop()
    assert code == 0, front.log()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for port in (front.port, service_port):
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
