"""``gometal sidecar``: start the plotting sidecar from the command line.

Kept apart from :mod:`gometal.viz.server` so that the ``gometal`` command does not import
the web stack until this sub-command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_PORT", "add_sidecar_command", "main", "run_sidecar"]

DEFAULT_DATA_DIR = "gometal-plots"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_MB = 10.0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1-65535, got {value}")
    return value


def _positive_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of MB > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of MB > 0, got {text}")
    return value


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
    sidecar.set_defaults(handler=run_sidecar)


def run_sidecar(args: argparse.Namespace) -> int:
    """Runs the sidecar as configured by parsed ``gometal sidecar`` arguments.

    Args:
        args: the parsed arguments (``port``, ``host``, ``data_dir``, ``max_body_mb``).

    Returns:
        The process exit code (0 after a clean shutdown).

    Example:
        >>> run_sidecar(argparse.Namespace(port=8080, host="127.0.0.1",
        ...     data_dir="plots", max_body_mb=10.0))  # doctest: +SKIP
        0
    """
    from .server import serve

    print(
        f"gometal sidecar: http://{args.host}:{args.port}/ (data in {args.data_dir})",
        flush=True,
    )
    serve(
        args.data_dir,
        host=args.host,
        port=args.port,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
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
