"""What the inference server checks on every request before a route runs, and the one
structured log line it writes per request.

- **Host**: only names the server is reached by (DNS rebinding protection, the plotting
  sidecar's :class:`~gometal.viz.server_guard.HostPolicy`).
- **API key**: with ``api_key`` set, every request must carry ``Authorization: Bearer
  <key>`` (compared in constant time); otherwise 401 with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..viz.server_guard import HostPolicy
from .request_log import REQUEST_LOGGER, log_request

__all__ = ["LOG_FIELDS_KEY", "REQUEST_LOGGER", "RequestGuard", "error_body"]

# At most this many distinct accepted Host values are remembered (any client chooses them).
ALLOWED_HOSTS_KEPT = 64
# Where a route leaves fields for the request's log line (the ASGI scope's "state").
LOG_FIELDS_KEY = "log_fields"


def error_body(message: str) -> dict[str, str]:
    """The protocol's error answer: ``{"error": message}``."""
    return {"error": message}


class RequestGuard:
    """ASGI middleware: refuses foreign hosts and missing API keys, and logs each request.

    Args:
        app: the application it wraps.
        policy: the ``Host`` names answered.
        api_key: the bearer token every request must carry, or ``None``.

    Example:
        >>> app.add_middleware(RequestGuard, policy=HostPolicy.for_bind("127.0.0.1"),
        ...                    api_key=None)  # doctest: +SKIP
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy, api_key: str | None) -> None:
        self.app = app
        self.policy = policy
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        # Host headers already accepted: clients send the same one on every request.
        self._allowed_hosts: set[str] = set()

    def _host_allowed(self, host: str | None) -> bool:
        if host in self._allowed_hosts:
            return True
        allowed = self.policy.allows(host)
        if allowed and host is not None and len(self._allowed_hosts) < ALLOWED_HOSTS_KEPT:
            self._allowed_hosts.add(host)
        return allowed

    def problem(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """Why a request is refused: ``(status, message, headers)``, or ``None`` to serve it.

        Args:
            scope: the request's ASGI scope (its headers).

        Example:
            >>> guard.problem(scope)  # doctest: +SKIP
            (401, "this server needs 'Authorization: Bearer <api key>', got no API key", ...)
        """
        host, authorization = None, b""
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"authorization" and not authorization:
                authorization = value
        if not self._host_allowed(host):
            message = (
                f"Host {host!r} is not served here (DNS rebinding protection); accepted: "
                f"{self.policy.describe()}"
            )
            return 400, message, {}
        if self.expected is not None:
            given = authorization
            if not hmac.compare_digest(given, self.expected):
                what = "a wrong API key" if given else "no API key"
                message = f"this server needs 'Authorization: Bearer <api key>', got {what}"
                return 401, message, {"WWW-Authenticate": "Bearer"}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        problem = self.problem(scope)
        try:
            if problem is None:
                await self.app(scope, receive, record)
            else:
                code, message, headers = problem
                await JSONResponse(error_body(message), code, headers)(scope, receive, record)
        finally:
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status["code"],
                "ms": round((time.perf_counter() - started) * 1000, 3),
                **scope.get("state", {}).get(LOG_FIELDS_KEY, {}),
            }
            log_request(fields)
