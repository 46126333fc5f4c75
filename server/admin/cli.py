"""`python -m server admin-key create | list | revoke`: manage admin API keys (secrets shown once, never
listed)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

import asyncpg

from server.admin import keys, repo
from server.db.migrate import migrate


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `admin-key` command and its subcommands."""
    parser = sub.add_parser("admin-key", help="create, list or revoke admin API keys")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints it once on stdout")
    create.add_argument("--name", required=True, help="who or what uses the key (1-100 characters)")
    create.add_argument("--scopes", required=True, help=f"comma-separated, of: {', '.join(keys.SCOPES)}")
    actions.add_parser("list", help="every key (never its secret)")
    revoke = actions.add_parser("revoke", help="revoke a key now (by id or 12-character prefix)")
    revoke.add_argument("key", metavar="ID|PREFIX")
    return parser


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


async def run(dsn: str, args: argparse.Namespace) -> int:
    """Carry out one admin-key command against the database at `dsn`; the exit code."""
    try:
        if args.action == "create":
            name, scopes = keys.check_name(args.name), keys.parse_scopes(args.scopes)
    except ValueError as exc:
        print(f"catalog-api admin-key: {exc}", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        await migrate(conn)  # the tables exist whatever was run before
        if args.action == "create":
            made, row = await keys.create(conn, name=name, scopes=scopes)
            print(made.key)
            print(
                f"key {row['id']} ({name}, prefix {made.prefix}, scopes {','.join(scopes)}) created; "
                "it is shown only now: store it in a secret manager",
                file=sys.stderr,
            )
            return 0
        if args.action == "list":
            print("id\tprefix\tname\tscopes\tcreated\tlast_used\trevoked")
            for r in await repo.list_keys(conn):
                print(
                    f"{r['id']}\t{r['prefix']}\t{r['name']}\t{','.join(r['scopes'])}\t{_when(r['created_at'])}"
                    f"\t{_when(r['last_used_at'])}\t{_when(r['revoked_at'])}"
                )
            return 0
        return await _revoke(conn, args.key.strip())
    finally:
        await conn.close()


async def _revoke(conn: asyncpg.Connection, which: str) -> int:
    # A 12-hex-character string is a prefix (what `list` shows and logs may carry); digits otherwise an id.
    if keys.KEY_RE.fullmatch(which):
        which = which.split("_")[1]  # a whole key: revoke it without ever printing it
    if len(which) == 12 and all(c in "0123456789abcdef" for c in which):
        row = await repo.revoke_key(conn, None, which)
    elif which.isdigit() and len(which) <= 9:
        row = await repo.revoke_key(conn, int(which), None)
    else:
        print("catalog-api admin-key: give a key id or its 12-character prefix", file=sys.stderr)
        return 2
    if row is None:
        print(f"catalog-api admin-key: no key {which}", file=sys.stderr)
        return 1
    print(f"key {row['id']} ({row['name']}, prefix {row['prefix']}) revoked at {_when(row['revoked_at'])}")
    return 0
