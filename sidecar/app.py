"""Launcher of the gometal plotting sidecar; the service itself is ``gometal.viz.server``.

Run it as ``python sidecar/app.py --port 8080 --data-dir DIR`` (the same as ``gometal
sidecar``), or under any ASGI server: ``uvicorn app:app --app-dir sidecar`` serves the data
directory named by ``GOMETAL_SIDECAR_DATA_DIR`` (default ``gometal-plots``) to the ``Host``
names ``localhost``, ``127.0.0.1`` and ``::1`` plus those listed, comma-separated, in
``GOMETAL_SIDECAR_ALLOWED_HOSTS``. Add ``--http
gometal.viz.server_http:HeaderDeadlineH11Protocol`` for the deadline on request headers
that ``gometal sidecar`` has.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gometal.viz.server import create_app
from gometal.viz.server_cli import DEFAULT_DATA_DIR, main
from gometal.viz.server_guard import LOOPBACK_NAMES, HostPolicy

DATA_DIR_ENV = "GOMETAL_SIDECAR_DATA_DIR"
ALLOWED_HOSTS_ENV = "GOMETAL_SIDECAR_ALLOWED_HOSTS"


def __getattr__(name: str) -> Any:
    # ``app`` is built on first use, so importing this file creates no data directory.
    if name == "app":
        extra = [n.strip() for n in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if n.strip()]
        policy = HostPolicy([*LOOPBACK_NAMES, *extra])
        app = create_app(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR), host_policy=policy)
        globals()["app"] = app
        return app
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
