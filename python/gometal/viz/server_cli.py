"""``gometal sidecar``: start the plotting sidecar from the command line.

Kept apart from :mod:`gometal.viz.server` so that the ``gometal`` command does not import
the web stack until this sub-command runs.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from ..base.atomic import writable_folder_problem

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_PORT",
    "SidecarStartError",
    "add_sidecar_command",
    "check_listen_address",
    "main",
    "prepare_data_dir",
    "run_sidecar",
]

DEFAULT_DATA_DIR = "gometal-plots"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_MB = 10.0
# Kept equal to gometal.viz.server's and server_http's defaults (not imported from there:
# they load the web stack, which the `gometal` command leaves for when a server starts).
DEFAULT_MAX_UPLOADS = 16
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_WORKERS = 2
BYTES_PER_MB = 1024 * 1024
EXIT_USAGE = 2  # argparse's exit status for bad arguments


class SidecarStartError(ValueError):
    """The sidecar cannot start with these arguments; the message says what to do."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def _positive_mb(text: str) -> float:
    expected = "a finite number of MB, at least one byte (1e-6 MB)"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    # The limit is enforced in whole bytes: a size that rounds to 0 would refuse everything.
    if not (math.isfinite(value) and _body_bytes(value) >= 1):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
    return value


def _body_bytes(megabytes: float) -> int:
    return int(megabytes * BYTES_PER_MB)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _host_name(text: str) -> str:
    from .server_guard import HostPolicy

    try:
        HostPolicy([text])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_sidecar_command(commands: Any) -> None:
    """Registers ``gometal sidecar`` on an argparse sub-parser collection.

    Args:
        commands: what ``ArgumentParser.add_subparsers`` returned.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_sidecar_command(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["sidecar", "--port", "9000"]).port
        9000
    """
    sidecar = commands.add_parser(
        "sidecar",
        help="run the plotting sidecar web service",
        description="Serve training plots: stores payloads posted to /api/plot and "
        "/api/batch-plot under DATA_DIR and shows them at /plot/<id> and /dashboard/<batch>.",
    )
    sidecar.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port ({DEFAULT_PORT})"
    )
    sidecar.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    sidecar.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"where plots are stored; kept across restarts ({DEFAULT_DATA_DIR})",
    )
    sidecar.add_argument(
        "--max-body-mb",
        type=_positive_mb,
        default=DEFAULT_MAX_BODY_MB,
        help=f"largest request body accepted, in MB ({DEFAULT_MAX_BODY_MB:g})",
    )
    sidecar.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        metavar="NAME",
        action="append",
        type=_host_name,
        default=[],
        help="a further name clients reach the sidecar by, e.g. a container's service name "
        "(repeatable; '*' accepts any Host). Accepted anyway: localhost, 127.0.0.1, ::1, the "
        "--host address and, with --host 0.0.0.0 or ::, this machine's names and any IP address",
    )
    sidecar.add_argument(
        "--max-uploads",
        type=_positive_int,
        default=DEFAULT_MAX_UPLOADS,
        help=f"request bodies received at once; more get 503 + Retry-After ({DEFAULT_MAX_UPLOADS})",
    )
    sidecar.add_argument(
        "--header-timeout",
        type=_seconds,
        default=DEFAULT_HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help=f"time for a request's headers ({DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    sidecar.add_argument(
        "--body-timeout",
        type=_seconds,
        default=DEFAULT_BODY_TIMEOUT_S,
        metavar="SECONDS",
        help=f"time for a request's body ({DEFAULT_BODY_TIMEOUT_S:g})",
    )
    sidecar.add_argument(
        "--workers",
        type=_positive_int,
        default=DEFAULT_WORKERS,
        help=f"threads that check, draw and store plots ({DEFAULT_WORKERS})",
    )
    sidecar.set_defaults(handler=run_sidecar)


def prepare_data_dir(data_dir: str | os.PathLike[str]) -> None:
    """Creates ``data_dir`` if missing and checks that files can be written there.

    Args:
        data_dir: the ``--data-dir`` folder.

    Raises:
        SidecarStartError: ``data_dir`` is a file, or cannot be created or written.

    Example:
        >>> prepare_data_dir("gometal-plots")  # doctest: +SKIP
    """
    problem = writable_folder_problem(data_dir, "--data-dir")
    if problem is not None:
        raise SidecarStartError(problem)


def check_listen_address(host: str, port: int) -> None:
    """Binds ``host:port`` once and releases it, so a taken port is reported before start.

    The probe binds as the server will (``SO_REUSEADDR``, IPv6 when ``host`` has a colon),
    so a port left in ``TIME_WAIT`` by an earlier run is not mistaken for a taken one.

    Args:
        host: the address to bind.
        port: the TCP port.

    Raises:
        SidecarStartError: the port is in use, or the address cannot be bound here.

    Example:
        >>> check_listen_address("127.0.0.1", 8080)  # doctest: +SKIP
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise SidecarStartError(
                    f"port {port} on {host} is in use (another program is listening there); "
                    "stop it or choose another --port"
                ) from err
            raise SidecarStartError(
                f"cannot listen on {host} port {port} ({err.strerror or err}); "
                "check --host and --port"
            ) from err


def run_sidecar(args: argparse.Namespace) -> int:
    """Runs the sidecar as configured by parsed ``gometal sidecar`` arguments.

    Args:
        args: the parsed arguments (``port``, ``host``, ``data_dir``, ``max_body_mb``;
            ``allowed_hosts``, ``max_uploads``, ``header_timeout``, ``body_timeout`` and
            ``workers`` take their defaults when absent).

    Returns:
        The process exit code: 0 after a clean shutdown; 2 after a one-line
        ``gometal sidecar: ...`` error on stderr when the port is taken or the data folder
        cannot be used (nothing is announced then).

    Example:
        >>> run_sidecar(argparse.Namespace(port=8080, host="127.0.0.1",
        ...     data_dir="plots", max_body_mb=10.0))  # doctest: +SKIP
        0
    """
    from .server import serve

    try:
        prepare_data_dir(args.data_dir)
        check_listen_address(args.host, args.port)
    except SidecarStartError as err:
        print(f"gometal sidecar: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"gometal sidecar: http://{args.host}:{args.port}/ (data in {args.data_dir})",
        flush=True,
    )
    serve(
        args.data_dir,
        host=args.host,
        port=args.port,
        max_body_bytes=_body_bytes(args.max_body_mb),
        allowed_hosts=getattr(args, "allowed_hosts", ()),
        max_uploads=getattr(args, "max_uploads", DEFAULT_MAX_UPLOADS),
        header_timeout_s=getattr(args, "header_timeout", DEFAULT_HEADER_TIMEOUT_S),
        body_timeout_s=getattr(args, "body_timeout", DEFAULT_BODY_TIMEOUT_S),
        workers=getattr(args, "workers", DEFAULT_WORKERS),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parses sidecar arguments alone (``python -m gometal.viz.server_cli --port 8080``).

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit code.

    Example:
        >>> main(["--port", "8080", "--data-dir", "plots"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(prog="gometal")
    add_sidecar_command(parser.add_subparsers(dest="command"))
    return run_sidecar(parser.parse_args(["sidecar", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
