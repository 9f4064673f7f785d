"""Joining an MPI job: ``init``, ``shutdown``, and the job's rank and size.

``init`` loads mpi4py (the ``distributed`` extra), then hands the engine the job's
communicator: the library mpi4py loaded and the handles of the communicator, ``MPI_FLOAT``,
``MPI_BYTE`` and ``MPI_SUM``. The engine calls that library itself, so the training step
averages gradients without returning to Python, and gometal builds without MPI.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Any

from .. import _core

_INSTALL_HINT = (
    "distributed training needs mpi4py and an MPI: pip install 'gometal[distributed]', "
    "then start the processes with mpirun -n N python script.py"
)


@dataclass(frozen=True)
class JobInfo:
    """This process's place in the job.

    Attributes:
        rank: this process's number, 0 to ``size - 1``.
        size: the number of processes.
        comm: the mpi4py communicator the engine uses.
    """

    rank: int
    size: int
    comm: Any


_job: JobInfo | None = None
_exit_hook_registered = False


def _loaded_mpi_library() -> str:
    """The path of the libmpi this process loaded (mpi4py's), for the engine to bind to."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path)
                if name.startswith(("libmpi.so", "libmpi.dylib")):
                    return path
    except OSError:
        pass  # no /proc (macOS): ask the dynamic linker by name below
    found = ctypes.util.find_library("mpi")
    if found is None:
        raise RuntimeError(f"could not find the MPI library mpi4py loaded; {_INSTALL_HINT}")
    return found


def _handle_bytes(library: str) -> int:
    """The width of the library's handles (MPI_Comm, MPI_Datatype, ...)."""
    # Open MPI's handles point to the predefined objects it exports (ompi_mpi_comm_world,
    # ...); MPICH and the MPIs derived from it use ints.
    mpi = ctypes.CDLL(library, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    return ctypes.sizeof(ctypes.c_void_p) if hasattr(mpi, "ompi_mpi_comm_world") else 4


def init(comm: Any = None) -> JobInfo:
    """Joins this process to its MPI job (started by ``mpirun -n N``).

    Attaches the job's communicator to the engine, so a ``Trainer`` built afterwards
    averages its gradients over the ranks inside its compiled step, checks every rank
    built the same model and starts from rank 0's weights. Calling it again returns the
    same job. ``shutdown`` runs at exit.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (default ``MPI.COMM_WORLD``).

    Returns:
        The ``JobInfo`` (rank, size, communicator).

    Raises:
        ImportError: mpi4py is not installed.

    Example:
        >>> job = gm.distributed.init()  # doctest: +SKIP
        >>> job.rank, job.size  # doctest: +SKIP
        (0, 2)
    """
    global _job, _exit_hook_registered
    if _job is not None:
        return _job
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    comm = MPI.COMM_WORLD if comm is None else comm
    library = _loaded_mpi_library()
    rank, size = _core.attach_mpi_communicator(
        library,
        comm.handle,
        MPI.FLOAT.handle,
        MPI.BYTE.handle,
        MPI.SUM.handle,
        _handle_bytes(library),
    )
    _job = JobInfo(rank=rank, size=size, comm=comm)
    if not _exit_hook_registered:
        # Registered after mpi4py's own exit hook, so it runs first: the engine lets go of
        # the communicator before MPI is finalized.
        atexit.register(shutdown)
        _exit_hook_registered = True
    return _job


def is_initialized() -> bool:
    """Whether ``init`` attached a communicator (and ``shutdown`` has not detached it).

    Example:
        >>> gm.distributed.is_initialized()
        False
    """
    return _job is not None


def rank() -> int:
    """This process's rank (0 outside a job).

    Example:
        >>> gm.distributed.rank()
        0
    """
    return _core.communicator_info()[0]


def size() -> int:
    """The number of processes in the job (1 outside a job).

    Example:
        >>> gm.distributed.size()
        1
    """
    return _core.communicator_info()[1]


def barrier() -> None:
    """Returns once every rank called it (nothing to wait for outside a job).

    Example:
        >>> gm.distributed.barrier()
    """
    if _job is not None:
        _core.barrier()


def shutdown() -> None:
    """Detaches the communicator: engines then act as a job of one process. MPI itself
    is finalized by mpi4py at exit.

    Example:
        >>> gm.distributed.shutdown()
    """
    global _job
    _core.detach_communicator()
    _job = None
