"""Names of SQL statements for logs and metrics: the repo constant that holds the text, never parameters.

Statements are module constants of the `repo.py` modules (house style), so a statement is named
`<package>.repo.<CONSTANT>` (e.g. `catalog.repo.PRODUCT_DETAIL`). Statements built at run time from
declared parts (catalog/repo's filtered lists) are named by their first keyword and a hash of the text:
`sql.select.1a2b3c4d`, the same in every process and run. The index of constants is built on first use
and rebuilt when modules were imported since (at most once per new module).
"""

from __future__ import annotations

import hashlib
import sys

MAX_ENTRIES = 4096  # names of run-time statements kept (bounded like every memo)


class StatementNames:
    """Text -> name, from the repo modules' constants; a hash name for the rest."""

    def __init__(self) -> None:
        self._constants: dict[str, str] = {}
        self._modules_seen = 0
        self._built: dict[str, str] = {}

    def _index(self) -> None:
        mods = [(n, m) for n, m in list(sys.modules.items()) if n.startswith("server.") and m is not None]
        if len(mods) == self._modules_seen:
            return
        self._modules_seen = len(mods)
        for name, module in mods:
            short = name.removeprefix("server.")
            for attr, value in list(vars(module).items()):
                if attr.isupper() and isinstance(value, str) and len(value) > 12:
                    self._constants.setdefault(value, f"{short}.{attr}")

    def name(self, query: str) -> str:
        """The statement's name (never its parameters: the text has only $n placeholders)."""
        found = self._constants.get(query) or self._built.get(query)
        if found is not None:
            return found
        self._index()
        found = self._constants.get(query)
        if found is not None:
            return found
        words = query.split(None, 1)
        verb = words[0].lower() if words and words[0].isalpha() else "sql"
        digest = hashlib.blake2b(query.encode(), digest_size=4).hexdigest()
        found = f"sql.{verb[:16]}.{digest}"
        if len(self._built) < MAX_ENTRIES:
            self._built[query] = found
        return found


statement_names = StatementNames()
