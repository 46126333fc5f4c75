"""nginx in front of the service: one template, rendered as the production config (docs/nginx.conf) and as
a runnable one; `python -m server.nginx` runs nginx with it, unprivileged and in the foreground.

Robyn has no header/body timeouts and buffers whole bodies before any Python runs, so these limits can only
live in front of it. The runnable config differs from the documented one only in the values filled in
(listen address, upstream, timeouts, paths), and both come from TEMPLATE, so they cannot drift. nginx's own
answers (405 for unknown methods, 413, 414, 431, 502...) use the bodies of server/errors.py, rendered here.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from server.errors import (
    AppError,
    BadGateway,
    BadRequest,
    GatewayTimeout,
    HeaderTooLarge,
    HttpVersionNotSupported,
    MethodNotAllowed,
    NotFound,
    NotImplementedFeature,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedMediaType,
    UriTooLong,
)
from server.nginx_template import TEMPLATE
from server.settings import Settings

# Methods the API routes (server/app.py METHODS): it answers 404/405 with the right Allow itself.
PASSED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALLOW_ANY_RESOURCE = "GET, HEAD, OPTIONS"  # what every route accepts (the Allow of nginx's own 405)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


# Every status nginx itself may answer with, and the error whose body it sends. nginx's 494 (one header
# line over the buffer) is sent as our 431; 408 is listed though nginx mostly just closes a stalled client.
EDGE_ERRORS: tuple[type[AppError], ...] = (
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    UriTooLong,
    UnsupportedMediaType,
    HeaderTooLarge,
    AppError,
    NotImplementedFeature,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
    HttpVersionNotSupported,
)


_IMAGE_MAX_BYTES = int(Settings.model_fields["IMAGE_MAX_BYTES"].default)


class EdgeSettings(Settings):
    """Settings of the service plus those of the nginx front (it reads HOST, PORT and the size limits)."""

    EDGE_HOST: str = Field("127.0.0.1", pattern=r"^[A-Za-z0-9.:\[\]-]{1,255}$")
    EDGE_PORT: int = Field(8080, ge=1, le=65535)
    EDGE_HEADER_TIMEOUT_S: int = Field(10, ge=1, le=300)
    EDGE_BODY_TIMEOUT_S: int = Field(10, ge=1, le=300)
    EDGE_NGINX: str = "nginx"  # the binary: a name on PATH (or in /usr/sbin) or a path


@dataclass(frozen=True, slots=True)
class Front:
    """The values that differ between the production config and a runnable one."""

    listen: str
    upstream: str
    header_timeout_s: int
    body_timeout_s: int
    max_body_bytes: int
    max_header_bytes: int
    access_log: str
    max_image_bytes: int = _IMAGE_MAX_BYTES  # admin image uploads' own body limit

    @classmethod
    def from_settings(cls, settings: EdgeSettings, access_log: str = "access.log") -> Front:
        """The runnable front of one service (HOST:PORT) on EDGE_HOST:EDGE_PORT."""
        return cls(
            listen=f"{_hostport(settings.EDGE_HOST, settings.EDGE_PORT)}",
            upstream=_hostport(settings.HOST, settings.PORT),
            header_timeout_s=settings.EDGE_HEADER_TIMEOUT_S,
            body_timeout_s=settings.EDGE_BODY_TIMEOUT_S,
            max_body_bytes=settings.MAX_BODY_BYTES,
            max_header_bytes=settings.MAX_HEADER_BYTES,
            access_log=access_log,
            max_image_bytes=settings.IMAGE_MAX_BYTES,
        )


def _default(name: str) -> int:
    return int(EdgeSettings.model_fields[name].default)


PRODUCTION = Front(
    listen="80 reuseport backlog=4096",
    upstream="127.0.0.1:8000",
    header_timeout_s=_default("EDGE_HEADER_TIMEOUT_S"),
    body_timeout_s=_default("EDGE_BODY_TIMEOUT_S"),
    max_body_bytes=_default("MAX_BODY_BYTES"),
    max_header_bytes=_default("MAX_HEADER_BYTES"),
    access_log="/var/log/nginx/catalog-api.access.log",
)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _size(n: int) -> str:
    """nginx size syntax, exact: 1048576 -> 1m, 16384 -> 16k."""
    for unit, factor in (("m", 1 << 20), ("k", 1 << 10)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def problem_map() -> str:
    """The `map $status $catalog_problem` entries: each status's problem+json body, request id filled in
    by nginx. Texts come from the error classes, so nginx and the API answer alike."""
    lines = []
    for cls in sorted(EDGE_ERRORS, key=lambda c: c is AppError):  # `default` last, for the reader
        body = cls().body("@request_id@").decode()
        if any(c in body for c in "'\\$\n"):
            raise ValueError(f"{cls.__name__}: text unsafe in an nginx string: {body!r}")
        body = body.replace("@request_id@", "$catalog_request_id")
        lines.append(f"    {'default' if cls is AppError else cls.status} '{body}';")
    return "\n".join(lines)


def render_front(front: Front) -> str:
    """The http-level config (maps, upstream, server): docs/nginx.conf with PRODUCTION."""
    values = {
        "listen": front.listen,
        "upstream": front.upstream,
        "header_timeout": f"{front.header_timeout_s}s",
        "body_timeout": f"{front.body_timeout_s}s",
        "max_body": _size(front.max_body_bytes),
        "max_image": _size(front.max_image_bytes),
        "header_buffer": _size(front.max_header_bytes),
        "access_log": front.access_log,
        "methods": "\n".join(f"    {m} 1;" for m in PASSED_METHODS),
        "problems": problem_map(),
        "allow": ALLOW_ANY_RESOURCE,
        "csp": API_CSP,
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], TEMPLATE)


def render_main(front: Front, worker_user: str | None = None) -> str:
    """A complete nginx.conf around render_front, paths relative to the prefix (`nginx -p DIR/`)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 65536
    connections = max(256, min(4096, limit // 2))
    user = f"user {worker_user};\n" if worker_user else ""
    body = render_front(front).rstrip("\n").replace("\n", "\n    ").replace("\n    \n", "\n\n")
    return (
        "# Generated by `python -m server.nginx` from server/nginx_template.py: do not edit.\n"
        f"{user}daemon off;\nworker_processes auto;\nworker_rlimit_nofile {min(limit, 2 * connections)};\n"
        "pid nginx.pid;\nerror_log stderr warn;\n\n"
        f"events {{\n    worker_connections {connections};\n}}\n\n"
        "http {\n"
        "    client_body_temp_path tmp/body;\n    proxy_temp_path tmp/proxy;\n"
        "    fastcgi_temp_path tmp/fastcgi;\n    uwsgi_temp_path tmp/uwsgi;\n    scgi_temp_path tmp/scgi;\n\n"
        f"    {body}\n}}\n"
    )


def find_nginx(name: str = "nginx") -> str | None:
    """Path of the nginx binary (PATH, then /usr/sbin and /usr/local/sbin, which users' PATH may lack)."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def worker_user(edge_dir: Path) -> str | None:
    """The `user` directive's value: none for a normal user (nginx runs as them); started by root,
    `nobody` when it can reach edge_dir (temp files live there), else root itself."""
    if os.geteuid() != 0:
        return None
    reachable = all(p.stat().st_mode & stat.S_IXOTH for p in (edge_dir, *edge_dir.parents))
    if reachable:
        try:
            nobody = pwd.getpwnam("nobody")
            return f"nobody {grp.getgrgid(nobody.pw_gid).gr_name}"
        except KeyError:
            pass
    print(f"catalog-edge: nginx workers run as root (`nobody` cannot reach {edge_dir})", file=sys.stderr)
    return "root"


def prepare(settings: EdgeSettings, nginx: str) -> tuple[list[str], Path]:
    """Write DATA_DIR/edge/nginx.conf; return the nginx command line and the edge folder."""
    edge_dir = (settings.DATA_DIR / "edge").resolve()
    edge_dir.mkdir(parents=True, exist_ok=True)
    edge_dir.chmod(0o755)
    (edge_dir / "tmp").mkdir(exist_ok=True)
    conf = edge_dir / "nginx.conf"
    conf.write_text(render_main(Front.from_settings(settings), worker_user(edge_dir)), encoding="utf-8")
    return [nginx, "-p", f"{edge_dir}/", "-c", str(conf), *_startup_log_flag(nginx)], edge_dir


def _startup_log_flag(nginx: str) -> list[str]:
    # Before reading the config nginx opens its compiled-in error log (/var/log/nginx: not ours);
    # `-e` (nginx >= 1.19.5) points it at stderr.
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    version = tuple(int(x) for x in found.groups()) if found else (0, 0, 0)
    return ["-e", "stderr"] if version >= (1, 19, 5) else []


def _stop(proc: subprocess.Popen[bytes], first: signal.Signals, grace_s: float) -> None:
    """Signal, wait up to grace_s, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(first)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(nginx_cmd: list[str], service_cmd: list[str] | None, service_env: Mapping[str, str]) -> int:
    """Run nginx (and the service, if given) until SIGTERM/SIGINT or until either exits; stop both."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    service = None
    if service_cmd is not None:
        service = subprocess.Popen(service_cmd, env=dict(service_env), stdin=subprocess.DEVNULL)
    nginx = subprocess.Popen(nginx_cmd, stdin=subprocess.DEVNULL)
    procs = [p for p in (nginx, service) if p is not None]
    while not stop.is_set() and all(p.poll() is None for p in procs):
        stop.wait(0.2)
    # nginx first (SIGQUIT: finish requests in flight, then exit), then the service behind it.
    _stop(nginx, signal.SIGQUIT, 10)
    if service is not None:
        _stop(service, signal.SIGTERM, 30)
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, -signal.SIGQUIT)]
    return 0 if stop.is_set() or not failed else 1


def load_edge_settings(**overrides: Any) -> EdgeSettings:
    """EdgeSettings from the environment (and .env); exit 2 naming each bad variable."""
    try:
        return EdgeSettings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            name = err["loc"][0] if err["loc"] else "settings"
            print(f"catalog-edge: {name}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m server.nginx`."""
    parser = argparse.ArgumentParser(prog="python -m server.nginx", description=__doc__.split("\n")[0])
    parser.add_argument("--with-service", action="store_true", help="also run the service behind nginx")
    parser.add_argument(
        "--seed-if-empty", type=int, metavar="N", help="with --with-service: seed N demo products"
    )
    parser.add_argument("--production", action="store_true", help="print the production config and exit")
    parser.add_argument("--print", action="store_true", help="print the runnable config and exit")
    parser.add_argument("--check", action="store_true", help="write the runnable config, `nginx -t` it, exit")
    args = parser.parse_args(argv)
    if args.production:
        sys.stdout.write(render_front(PRODUCTION))
        return 0
    settings = load_edge_settings()
    if args.print:
        sys.stdout.write(render_main(Front.from_settings(settings)))
        return 0
    nginx = find_nginx(settings.EDGE_NGINX)
    if nginx is None:
        print(f"catalog-edge: nginx binary {settings.EDGE_NGINX!r} not found (apt-get install nginx-light)")
        return 2
    cmd, edge_dir = prepare(settings, nginx)
    if args.check:
        return subprocess.run([*cmd, "-t"], check=False).returncode
    service_cmd = None
    env = dict(os.environ)
    if args.with_service:
        service_cmd = [sys.executable, "-m", "server", "serve"]
        if args.seed_if_empty is not None:
            service_cmd += ["--seed-if-empty", str(args.seed_if_empty)]
        # nginx connects from loopback: believe its X-Forwarded-For, and link images through nginx.
        env.setdefault("TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
        env.setdefault("PUBLIC_BASE_URL", f"http://{_hostport(settings.EDGE_HOST, settings.EDGE_PORT)}")
    print(
        f"catalog-edge: http://{_hostport(settings.EDGE_HOST, settings.EDGE_PORT)} -> "
        f"{_hostport(settings.HOST, settings.PORT)} (config {edge_dir / 'nginx.conf'})"
        + ("" if args.with_service else "; the service needs TRUSTED_PROXIES=127.0.0.1/32 to see clients"),
        file=sys.stderr,
        flush=True,
    )
    return run(cmd, service_cmd, env)


if __name__ == "__main__":
    raise SystemExit(main())
