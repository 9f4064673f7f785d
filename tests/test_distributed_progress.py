"""How the non-blocking all-reduces of a step progress while the backward pass runs: by
default the engine tests the requests in flight after every kernel (no thread, no sleep);
``GOMETAL_MPI_PROGRESS=thread`` keeps the former progress thread. The same collectives run
either way, so the weights agree bit for bit."""

from __future__ import annotations

import re

import numpy as np
import pytest

from test_distributed import PER_RANK_BATCH, mpirun, ran


def _thread_counts(output: str) -> dict[int, tuple[int, int]]:
    """``{rank: (threads once in the job, threads after training)}`` from progress_threads.py."""
    found = re.findall(r"rank (\d+): threads (\d+) -> (\d+)", output)
    return {int(rank): (int(before), int(after)) for rank, before, after in found}


@pytest.mark.parametrize("mode, extra_threads", [("steps", 0), ("thread", 1)])
def test_only_the_thread_mode_starts_a_progress_thread(mode, extra_threads, monkeypatch):
    monkeypatch.setenv("GOMETAL_MPI_PROGRESS", mode)
    counts = _thread_counts(ran(mpirun("progress_threads.py", 2, str(PER_RANK_BATCH))))
    assert sorted(counts) == [0, 1], counts
    for rank, (before, after) in counts.items():
        assert after - before == extra_threads, f"{mode} rank {rank}: {before} -> {after}"


def test_progress_between_kernels_gives_the_progress_threads_bits(tmp_path, monkeypatch):
    runs = {}
    for mode in ("steps", "thread"):
        monkeypatch.setenv("GOMETAL_MPI_PROGRESS", mode)
        out = tmp_path / mode
        out.mkdir()
        ran(mpirun("overlap_replicas.py", 2, "adam", str(PER_RANK_BATCH), str(out)))
        runs[mode] = [dict(np.load(out / f"overlapped{rank}.npz")) for rank in range(2)]
    for rank in range(2):
        assert runs["steps"][rank].keys() == runs["thread"][rank].keys()
        for name, value in runs["steps"][rank].items():
            np.testing.assert_array_equal(runs["thread"][rank][name], value, err_msg=name)


def test_an_unknown_progress_mode_is_refused_on_every_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("GOMETAL_MPI_PROGRESS", "spin")
    result = mpirun("overlap_replicas.py", 2, "adam", str(PER_RANK_BATCH), str(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "GOMETAL_MPI_PROGRESS must be steps or thread, got 'spin'" in output, output
