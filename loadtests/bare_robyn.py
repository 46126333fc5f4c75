"""The reference ceiling of `bench_http`: a bare Robyn app, one sync route returning fixed bytes from memory.

    BARE_BODY_FILE=page.json.gz BARE_PORT=8199 BARE_PROCESSES=2 python -m loadtests.bare_robyn

Serves GET /bench with the file's bytes as a gzip JSON body (the service's own products page, fetched by
bench_http), so the service's figures can be read as a fraction of what Robyn itself does on this machine.
Settings come from the environment because Robyn parses the command line itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from robyn import Headers, Request, Response, Robyn
from robyn.argument_parser import Config


def main() -> None:
    """Serve the body until SIGTERM/SIGINT."""
    body = Path(os.environ["BARE_BODY_FILE"]).read_bytes()
    config = Config()
    config.processes = int(os.environ.get("BARE_PROCESSES", "2"))
    config.workers = 1
    config.dev = False
    config.disable_openapi = True
    config.log_level = "WARNING"
    config.open_browser = False
    app = Robyn(__file__, config=config)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}

    @app.get("/bench")  # Robyn injects by parameter name: it must be `request`
    def bench(request: Request) -> Response:
        return Response(status_code=200, headers=Headers(headers), description=body)

    # Same process model and clean stop as the service (Robyn 0.88 alone hangs or SIGKILLs its children).
    from server.workers import serve

    port = int(os.environ.get("BARE_PORT", "8199"))
    serve(app, host="127.0.0.1", port=port, processes=config.processes, grace_s=2.0)


if __name__ == "__main__":
    main()
