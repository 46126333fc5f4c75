"""Schemathesis (every check) against /openapi.json of a service with DEFAULT settings: rate limits on, so
429s come back and must be documented, conforming answers like any other; then the same runs with limits
off, so that generated requests reach the validation and handlers that the 429s shield.

Two kinds of request never reach Python, so no code of ours can answer them, and the front proxy
(docs/nginx.conf) screens them instead; the runs leave out exactly these:
- the QUERY method: Robyn cannot route it and answers with its own text/plain 404 (every method Robyn can
  route, TRACE and CONNECT included, gets our 405 with `Allow`). Left out by naming the methods the
  coverage phase's unsupported-method probes may use (schemathesis.toml below), not by dropping the check.
- `Content-Type: multipart/form-data` without a boundary on a GET: Robyn's request parser answers 500
  before any handler (ST102). Allowed in the coverage run only, and only for such a request.
  With a body (operations that declare one: the admin writes), Robyn also leaves the kept-alive connection
  in a state where the next request on it is never answered (reproduced with plain `requests` on any route,
  GETs included), so the coverage run sends `Connection: close`: each request on its own connection.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalog_testlib import Database, ServerProcess, Services

ROBYN_KNOWN = "ST102"  # server error on an undeclared request Content-Type (multipart without boundary)
AUTH_AFTER_LIMIT = "ST203"  # missing Authorization answered 429 (quota spent) rather than 401
# Schemathesis's default unexpected methods less QUERY (see the module docstring).
UNEXPECTED_METHODS = ("get", "put", "post", "delete", "options", "patch", "trace")


@pytest.fixture(params=["default", "unlimited"])
def server(
    request: pytest.FixtureRequest, database: Database, services: Services, tmp_path: Path
) -> Iterator[ServerProcess]:
    """The service with default settings (rate limits on: most fuzzed catalog requests meet a 429, which
    must conform too), then with limits off (so the generated requests reach the validation and handlers
    behind them). Each server has a quota of its own (Redis key prefix): a run starts with a full burst."""
    limits = "true" if request.param == "default" else "false"
    proc = ServerProcess(
        database,
        services,
        tmp_path,
        RATE_LIMIT_ENABLED=limits,
        SERVER_TIMING="false",
        REDIS_KEY_PREFIX=f"fuzz{uuid.uuid4().hex[:12]}:",
    ).start()
    yield proc
    proc.stop()


def schemathesis(server: ServerProcess, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the schemathesis CLI against the server's spec, every check on."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("schemathesis is not installed")
    methods = ", ".join(f'"{m}"' for m in UNEXPECTED_METHODS)
    config = tmp_path / "run" / "schemathesis.toml"
    config.parent.mkdir()
    # Account inputs have rules no schema states (common passwords refused, lengths counted after NFKC,
    # tokens unknown or used): a schema-valid body may be a 422 there, by design.
    accounts = (
        "[[operations]]\n"
        'include-path-regex = "^/api/auth/"\n'
        "checks.positive_data_acceptance.expected-statuses = "
        '["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]\n'
    )
    config.write_text(f"[phases.coverage]\nunexpected-methods = [{methods}]\n\n{accounts}")
    return subprocess.run(
        [
            cli,
            "--no-color",
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            "all",
            "--seed",
            "7",
            "--request-timeout",
            "10",
            *extra,
        ],
        cwd=tmp_path / "run",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_fuzzing_and_stateful_phases_find_nothing(server: ServerProcess, tmp_path: Path) -> None:
    result = schemathesis(server, tmp_path, "--phases", "examples,fuzzing,stateful", "--max-examples", "60")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout


@pytest.mark.slow
def test_coverage_phase_finds_only_the_known_robyn_parser_case(server: ServerProcess, tmp_path: Path) -> None:
    result = schemathesis(server, tmp_path, "--phases", "coverage", "-H", "Connection: close")
    out = result.stdout
    assert "Test cases:" in out, out[-3000:] + result.stderr[-2000:]
    summary = out.split("Failures:")[-1] if "Failures:" in out else ""
    codes = set(re.findall(r"❌ (\S+)", summary))
    assert codes <= {ROBYN_KNOWN, AUTH_AFTER_LIMIT}, out[-6000:]
    for case in out.split("Test Case ID:")[1:]:
        if f"- {AUTH_AFTER_LIMIT} " in case:
            # The rate limit comes first: a client without a key that spent its admin quota gets the 429.
            assert re.findall(r"Got (\d+) when missing required", case) == ["429"], case
            continue
        for curl in re.findall(r"curl -X .*", case):
            assert "multipart/form-data" in curl, out[-6000:]
