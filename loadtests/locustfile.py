"""Locust entry point: `locust --config loadtests/locust.conf` (see loadtests/README.md).

Users: ShopperUser, ReturningUser, HerdUser, GreedyUser (loadtests/users.py); account scenarios go in
loadtests/account_users.py, the ordering shopper in loadtests/order_users.py. The catalog sample is read
from the service at test start, never hard-coded.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

# Locust puts this file's folder on sys.path, not the repo root: make `loadtests.*` importable (workers too).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtests import account_users, order_users, users
from loadtests.account_users import USERS as ACCOUNT_USERS
from loadtests.catalog_data import sample_for
from loadtests.order_users import USERS as ORDER_USERS
from loadtests.users import GreedyUser, HerdUser, ReturningUser, ShopperUser

_EXTRA = [*ACCOUNT_USERS, *ORDER_USERS]
__all__ = ["GreedyUser", "HerdUser", "ReturningUser", "ShopperUser", *(u.__name__ for u in _EXTRA)]
globals().update({u.__name__: u for u in _EXTRA})


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    users.add_arguments(parser)
    account_users.add_arguments(parser)
    order_users.add_arguments(parser)


_env: list[Environment] = []


@events.init.add_listener
def _init(environment: Environment, **_kw: Any) -> None:
    account_users.configure(environment)
    order_users.configure(environment)
    users.configure(environment)
    environment.events.request.add_listener(users.count_limits)
    _env.append(environment)


@events.test_start.add_listener
def _warm(environment: Environment, **_kw: Any) -> None:
    # Read the sample before users spawn (on workers too), so the first requests are not queued behind it.
    if (
        environment.host
        and environment.runner is not None
        and type(environment.runner).__name__ != "MasterRunner"
    ):
        sample_for(environment.host)


@events.quitting.add_listener
def _report(environment: Environment, **_kw: Any) -> None:
    users.report_revalidation()
    users.report_limits()


@events.quit.add_listener
def _final_csv(**_kw: Any) -> None:
    # Locust rewrites <prefix>_stats.csv once a second and not at exit, so it misses the last second and
    # the users' stop: write the final figures (the ones the HTML report shows) for the SLO gate.
    env = _env[-1] if _env else None
    prefix = getattr(env.parsed_options, "csv_prefix", None) if env else None
    if env is None or not prefix or type(env.runner).__name__ == "WorkerRunner":
        return
    writer = StatsCSV(env, PERCENTILES_TO_REPORT)
    with open(f"{prefix}_final_stats.csv", "w", newline="") as fh:
        writer.requests_csv(csv.writer(fh))
    with open(f"{prefix}_final_failures.csv", "w", newline="") as fh:
        writer.failures_csv(csv.writer(fh))
    # Every request's time, in Locust's buckets (ms: exact below 100, then 10s, then 100s), so that several
    # runs' percentiles can be taken over all their requests at once (run_load.pooled_percentile).
    with open(f"{prefix}_response_times.json", "w") as fh:
        json.dump(env.stats.total.response_times, fh)
