"""Two hosts on one machine: two network namespaces joined by a veth pair, one rank in each,
MPI over TCP between their addresses. ``netns_agent.sh`` stands in for ssh (the launch's
``remote_agent``, Open MPI's ``plm_ssh_agent``): it runs the launcher's daemon in the
namespace that holds the address.
The job must train exactly as two ranks on one host do.

Making namespaces needs root and iproute2; where they cannot be made, the test fails and
says so (it is not skipped).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

import gometal as gm
from test_distributed import PER_RANK_BATCH, SCRIPTS, mpirun, ran

SUBNET = "10.231.0.0/30"
ADDRESSES = ("10.231.0.1", "10.231.0.2")
AGENT = SCRIPTS / "netns_agent.sh"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def two_hosts() -> Iterator[list[str]]:
    """Makes two network namespaces joined by a veth pair with ``ADDRESSES`` on its ends;
    yields their names and removes them afterwards."""
    names = [f"gm{os.getpid()}h{i}" for i in range(2)]
    made: list[str] = []
    try:
        for name in names:
            try:
                ip("netns", "add", name)
            except (OSError, subprocess.CalledProcessError) as error:
                reason = str(getattr(error, "stderr", "") or error).strip()
                pytest.fail(
                    "the two-host test needs network namespaces (root and iproute2's ip): "
                    f"`ip netns add {name}` failed: {reason}"
                )
            made.append(name)
        ends = [f"{name}v" for name in names]
        ip("link", "add", ends[0], "netns", names[0], "type", "veth",
           "peer", "name", ends[1], "netns", names[1])  # fmt: skip
        for name, end, address in zip(names, ends, ADDRESSES):
            ip("-n", name, "addr", "add", f"{address}/30", "dev", end)
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "link", "set", end, "up")
        yield names
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def run_on_two_hosts(names: list[str], script: str, *args: str) -> str:
    """Starts ``mpirun`` in the first namespace, under a host name of its own, with one
    rank on each address, TCP between them, and the agent in place of ssh."""
    options = [
        "--prtemca", "oob_tcp_if_include", SUBNET,
        "--mca", "pml", "ob1",
        "--mca", "btl", "tcp,self",
        "--mca", "btl_tcp_if_include", SUBNET,
    ]  # fmt: skip
    command = gm.distributed.mpirun_command(
        2, SCRIPTS / script, args, hosts=ADDRESSES, launcher_args=options, remote_agent=str(AGENT)
    )
    env = {
        **os.environ,
        "GOMETAL_NETNS_HOSTS": " ".join(f"{a}={n}" for a, n in zip(ADDRESSES, names)),
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
    }
    rename = 'hostname "$0" && exec "$@"'
    wrapped = ["ip", "netns", "exec", names[0], "unshare", "--uts", "sh", "-c", rename, names[0]]
    result = subprocess.run(
        [*wrapped, *command], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    return ran(result)


def test_two_ranks_in_two_network_namespaces_train_as_on_one_host(tmp_path):
    assert shutil.which("unshare"), "the two-host test needs util-linux's unshare"
    hosts, local = tmp_path / "hosts", tmp_path / "local"
    hosts.mkdir()
    local.mkdir()
    with two_hosts() as names:
        output = run_on_two_hosts(names, "host_replicas.py", str(PER_RANK_BATCH), str(hosts))
        namespaces = [os.stat(f"/run/netns/{name}").st_ino for name in names]
    ran(mpirun("host_replicas.py", 2, str(PER_RANK_BATCH), str(local)))
    for rank in range(2):
        assert f"rank {rank} of 2: weights differed from rank 0's after 0 steps" in output
    apart = [dict(np.load(hosts / f"rank{r}.npz")) for r in range(2)]
    together = [dict(np.load(local / f"rank{r}.npz")) for r in range(2)]
    # Each rank ran in its own namespace, under its host name.
    assert [int(r["network_namespace"]) for r in apart] == namespaces
    assert [str(r["host"]) for r in apart] == names
    assert int(together[0]["network_namespace"]) == os.stat("/proc/self/ns/net").st_ino
    weights = [k for k in together[0] if k not in ("network_namespace", "host")]
    assert weights
    for name in weights:
        for rank in range(2):
            np.testing.assert_array_equal(apart[rank][name], together[0][name], err_msg=name)
