"""Client of the plotting sidecar, for training code: it never raises.

Training must not fail because plotting did. :func:`send` posts payloads with a short
timeout, retries a bounded number of times on network errors and 5xx answers (waiting
as long as a busy sidecar's ``Retry-After`` asks, up to :data:`RETRY_AFTER_CAP_S`; a 4xx
is the payload's fault and is not retried), and on failure issues one ``RuntimeWarning`` per
process (per :class:`SidecarClient` for a client of one's own) and returns ``None``.
:func:`ensure_running` starts the sidecar in a background process when nothing answers.
Only the standard library is used here, so training needs no web stack.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_PORT",
    "RunSink",
    "SidecarClient",
    "default_url",
    "ensure_running",
    "health",
    "send",
    "stop_started",
]

SERVICE_NAME = "gometal-sidecar"  # what /health reports; kept equal to server.SERVICE_NAME
RETRY_BACKOFF_S = 0.2
# A busy sidecar's Retry-After is honoured up to this many seconds per retry.
RETRY_AFTER_CAP_S = 5.0
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = "gometal-plots"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the server's id rule
LOG_FILE = "sidecar.log"

_started: list[subprocess.Popen] = []
# The sidecar normally runs on this machine: an http_proxy meant for the internet must
# not capture requests to it.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _json_default(value: Any) -> Any:
    # NumPy scalars and arrays from metric code; anything else is a caller bug.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot send a {type(value).__name__} in a plot payload")


def _request(method: str, url: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
    status, doc, _ = _exchange(method, url, body, timeout)
    return status, doc


def _exchange(
    method: str, url: str, body: bytes | None, timeout: float
) -> tuple[int, Any, float | None]:
    """Status, JSON answer and ``Retry-After`` seconds (``None`` when absent)."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _opener.open(request, timeout=timeout) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        status, raw, headers = err.code, err.read(), err.headers
    retry_after = _retry_after(headers.get("Retry-After") if headers is not None else None)
    try:
        return status, json.loads(raw.decode("utf-8")), retry_after
    except (UnicodeDecodeError, ValueError):
        return status, {"error": raw[:200].decode("utf-8", "replace")}, retry_after


def _retry_after(value: str | None) -> float | None:
    # Seconds only: the sidecar sends them; an HTTP date from elsewhere is ignored.
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _error_text(doc: Any) -> Any:
    """What an error answer says: go-metal's ``message`` and ``error_code``, or the
    ``error`` of servers that predate them."""
    if not isinstance(doc, dict):
        return doc
    message = doc.get("message") or doc.get("error")
    code = doc.get("error_code")
    return f"{message} ({code})" if code else message


def health(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """Asks ``GET /health``; returns the answer when a gometal sidecar is there.

    Args:
        url: the sidecar's base URL, e.g. ``http://127.0.0.1:8080``.
        timeout: seconds to wait for the answer.

    Returns:
        The health document, or ``None`` when nothing answers or something else does.

    Example:
        >>> health("http://127.0.0.1:8080")  # doctest: +SKIP
        {'status': 'ok', 'service': 'gometal-sidecar', 'plots': 3}
    """
    try:
        status, doc = _request("GET", url.rstrip("/") + "/health", None, timeout)
    except (OSError, ValueError):
        return None
    if status == 200 and isinstance(doc, dict) and doc.get("service") == SERVICE_NAME:
        return doc
    return None


class SidecarClient:
    """Posts plot payloads to one sidecar; warns at most once over its lifetime.

    Args:
        url: the sidecar's base URL.
        timeout: seconds allowed per attempt (> 0).
        retries: further attempts after a failed one (>= 0).

    Raises:
        ValueError: a bad ``url``, ``timeout`` or ``retries`` (the only time it raises).

    Example:
        >>> client = SidecarClient("http://127.0.0.1:8080")
        >>> client.send([payload], batch_id="run-1")  # doctest: +SKIP
        {'success': True, 'message': '1 plots stored', 'batch_id': 'run-1', ...}
    """

    def __init__(self, url: str, timeout: float = 2.0, retries: int = 2) -> None:
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(
                f"url must be an http(s) URL such as http://127.0.0.1:8080, got {url!r}"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self.warned = False

    def _warn(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"plotting sidecar at {self.url}: {message}; training goes on without plots "
                "(further failures are not reported)",
                RuntimeWarning,
                stacklevel=3,
            )

    def send(
        self,
        payloads: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        title: str | None = None,
        replace: bool = False,
    ) -> dict[str, Any] | None:
        """Posts one payload (``/api/plot``) or a list of them (``/api/batch-plot``).

        Args:
            payloads: a payload dict, or a list of payload dicts.
            batch_id: the batch or run to file the plots under (appended to if it exists).
            title: the dashboard title of a new batch.
            replace: for a list, make it the batch's only plots (the earlier ones go).

        Returns:
            The server's JSON answer on success, else ``None`` (after one warning).

        Example:
            >>> SidecarClient("http://127.0.0.1:9").send({"plot_type": "qq_plot"})  # doctest: +SKIP
            None
        """
        try:
            method_url, body = self._encode(payloads, batch_id, title, replace)
        except (TypeError, ValueError) as err:
            self._warn(f"payloads could not be encoded as JSON ({err})")
            return None
        problem = "no attempt made"
        wait_s: float | None = None  # what a 503's Retry-After asked for
        for attempt in range(self.retries + 1):
            if attempt:
                backoff = RETRY_BACKOFF_S * 2 ** (attempt - 1)
                time.sleep(min(max(backoff, wait_s or 0.0), RETRY_AFTER_CAP_S))
            wait_s = None
            try:
                status, doc, wait_s = _exchange("POST", method_url, body, self.timeout)
            except (OSError, ValueError) as err:  # refused, reset, timed out, bad URL
                problem = f"{type(err).__name__}: {err}"
                continue
            if 200 <= status < 300 and isinstance(doc, dict):
                return doc
            problem = f"HTTP {status}: {_error_text(doc)}"
            if 400 <= status < 500:
                break  # the request itself is wrong; sending it again cannot help
        self._warn(f"sending failed after {attempt + 1} attempt(s) ({problem})")
        return None

    def _encode(
        self, payloads: Any, batch_id: str | None, title: str | None, replace: bool
    ) -> tuple[str, bytes]:
        if isinstance(payloads, Mapping):
            query = {"batch_id": batch_id} if batch_id is not None else {}
            url = self.url + "/api/plot"
            if query:
                url += "?" + urllib.parse.urlencode(query)
            doc: Any = dict(payloads)
        else:
            url = self.url + "/api/batch-plot"
            doc = {"plots": [dict(p) for p in payloads], "batch": True}
            if batch_id is not None:
                doc["batch_id"] = batch_id
            if title is not None:
                doc["title"] = title
            if replace:
                doc["replace"] = True
        return url, json.dumps(doc, default=_json_default, allow_nan=False).encode("utf-8")


_clients: dict[tuple[str, float, int], SidecarClient] = {}
_process_warned = False
_default_url: str | None = None


def _warn_process_once(message: str) -> None:
    global _process_warned
    if not _process_warned:
        _process_warned = True
        warnings.warn(
            f"plotting sidecar: {message}; training goes on without plots "
            "(further failures are not reported)",
            RuntimeWarning,
            stacklevel=4,
        )


def default_url() -> str:
    """The sidecar this process uses when given no URL: started on demand, once.

    Calls :func:`ensure_running` with port :data:`DEFAULT_PORT` and data directory
    :data:`DEFAULT_DATA_DIR` the first time, then returns the same URL.

    Returns:
        The base URL, e.g. ``http://127.0.0.1:8080``.

    Example:
        >>> default_url()  # doctest: +SKIP
        'http://127.0.0.1:8080'
    """
    global _default_url
    if _default_url is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _default_url = ensure_running(DEFAULT_PORT, DEFAULT_DATA_DIR)
        if caught:
            _warn_process_once(str(caught[0].message))
    return _default_url


def send(
    payloads: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    url: str | None = None,
    timeout: float = 2.0,
    retries: int = 2,
    *,
    batch_id: str | None = None,
    title: str | None = None,
    replace: bool = False,
) -> dict[str, Any] | None:
    """Posts payloads to the sidecar at ``url``; never raises, warns once per process.

    Args:
        payloads: a payload dict, or a list of payload dicts (sent as one batch).
        url: the sidecar's base URL, e.g. ``http://127.0.0.1:8080``; ``None`` uses
            :func:`default_url`, which starts a sidecar on demand.
        timeout: seconds allowed per attempt.
        retries: further attempts after a network error or a 5xx answer.
        batch_id: the batch or run to file the plots under.
        title: the dashboard title of a new batch.
        replace: for a list, make it the batch's only plots (the earlier ones go).

    Returns:
        The server's JSON answer (go-metal's ``PlottingResponse``: ``plot_id``,
        ``view_url``, ...; for a list its ``BatchPlottingResponse``: ``batch_id``,
        ``dashboard_url``, ``results``, ``summary``), or ``None`` when the plots could not
        be delivered.

    Example:
        >>> send([payload], "http://127.0.0.1:8080", batch_id="run-1")  # doctest: +SKIP
        {'success': True, 'batch_id': 'run-1', 'dashboard_url': '/dashboard/run-1', ...}
    """
    global _process_warned
    try:
        url = default_url() if url is None else url
        key = (url, timeout, retries)
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = SidecarClient(url, timeout, retries)
        client.warned = _process_warned
        result = client.send(payloads, batch_id=batch_id, title=title, replace=replace)
        _process_warned = client.warned
        return result
    except Exception as err:  # noqa: BLE001 - the contract is: plotting never stops training
        _warn_process_once(f"could not send plots ({type(err).__name__}: {err})")
        return None


class RunSink:
    """A collector sink that keeps one dashboard per training run up to date.

    Each call sends the run's current payload list with ``replace=True`` under one run
    id, so the dashboard shows the latest snapshot rather than one copy per epoch. It
    never raises and warns at most once.

    Args:
        url: the sidecar's base URL; ``None`` uses :func:`default_url` (started on demand
            at the first call).
        run_id: the batch id of the run; default: ``run-<UTC time>-<random>``.
        title: the dashboard's title.
        timeout: seconds allowed per attempt.
        retries: further attempts after a network error or a 5xx answer.

    Example:
        >>> sink = RunSink(title="mnist mlp")
        >>> viz = VisualizationCollector(sink=sink)  # doctest: +SKIP
        >>> sink.dashboard_url  # doctest: +SKIP
        'http://127.0.0.1:8080/dashboard/run-20260102-030405-1a2b3c'
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        run_id: str | None = None,
        title: str | None = None,
        timeout: float = 2.0,
        retries: int = 2,
    ) -> None:
        if run_id is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            run_id = f"run-{stamp}-{os.urandom(3).hex()}"
        if not isinstance(run_id, str) or not _ID.fullmatch(run_id):
            raise ValueError(f"run_id must match {_ID.pattern}, got {run_id!r}")
        self.url = url
        self.run_id = run_id
        self.title = title
        self.timeout = timeout
        self.retries = retries
        self._client: SidecarClient | None = None

    @property
    def dashboard_url(self) -> str | None:
        """The run's dashboard address, once the sidecar's URL is known."""
        return None if self.url is None else f"{self.url.rstrip('/')}/dashboard/{self.run_id}"

    def __call__(self, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Sends the run's current payloads, replacing what the run sent before.

        Args:
            payloads: every payload of the run so far.

        Returns:
            The server's answer, or ``None`` (nothing to send, or sending failed).
        """
        try:
            if self._client is None:
                self.url = default_url() if self.url is None else self.url
                self._client = SidecarClient(self.url, self.timeout, self.retries)
            if not payloads:
                return None
            return self._client.send(
                list(payloads), batch_id=self.run_id, title=self.title, replace=True
            )
        except Exception as err:  # noqa: BLE001 - plotting never stops training
            _warn_process_once(f"could not send plots ({type(err).__name__}: {err})")
            return None


def ensure_running(
    port: int = DEFAULT_PORT,
    data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 30.0,
) -> str:
    """Returns the sidecar's URL, starting it in a background process if none answers.

    The started service outlives the training run, so its pages stay viewable; its
    output goes to ``DATA_DIR/sidecar.log``. :func:`stop_started` ends the processes
    started here. A failure to start only warns: :func:`send` then fails quietly too.

    Args:
        port: the TCP port.
        data_dir: where the started service stores plots.
        host: the address to bind and to ask.
        startup_timeout: seconds to wait for ``/health`` to answer after starting.

    Returns:
        The base URL, e.g. ``http://127.0.0.1:8080``.

    Example:
        >>> url = ensure_running(8080, "runs/plots")  # doctest: +SKIP
        >>> send(payloads, url)  # doctest: +SKIP
    """
    url = f"http://{host}:{port}"
    if health(url) is not None:
        return url
    try:
        folder = Path(os.fspath(data_dir))
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "gometal.viz.server_cli"]
        command += ["--port", str(port), "--host", host, "--data-dir", str(folder)]
        with open(folder / LOG_FILE, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for training does not stop it
            )
    except (OSError, ValueError) as err:
        warnings.warn(f"could not start the plotting sidecar: {err}", RuntimeWarning, 2)
        return url
    _started.append(process)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if health(url, timeout=0.5) is not None:
            return url
        if process.poll() is not None:
            break
        time.sleep(0.1)
    warnings.warn(
        f"the plotting sidecar did not answer at {url} within {startup_timeout:g} s "
        f"(exit code {process.poll()}; see {folder / LOG_FILE})",
        RuntimeWarning,
        stacklevel=2,
    )
    return url


def stop_started(timeout: float = 10.0) -> None:
    """Ends the sidecar processes :func:`ensure_running` started in this process.

    Args:
        timeout: seconds to wait for each to exit before killing it.

    Example:
        >>> stop_started()  # doctest: +SKIP
    """
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
