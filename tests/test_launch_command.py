"""``gometal launch -n N SCRIPT ARGS``: the command line of gm.distributed.launch, run as a user
runs it, and its one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gometal.apps.cli import main

SCRIPTS = Path(__file__).parent / "distributed_scripts"


def test_launch_runs_the_script_on_every_rank_with_its_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    monkeypatch.setenv("PYTHONPATH", str(SCRIPTS))
    script = SCRIPTS / "train_replicas.py"
    assert main(["launch", "-n", "2", str(script), "adam", "4", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.npz", "rank1.npz"]
    # Data-parallel replicas end with the same weights.
    first, second = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    assert sorted(first.files) == sorted(second.files) and first.files
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_launch_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    assert main(["launch", "-n", "2", str(tmp_path / "missing.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gometal launch:") and "missing.py" in err and err.count("\n") == 1
    script = tmp_path / "train.py"
    script.write_text("pass\n")
    for bad in (["-n", "0"], ["-n", "2", "--hosts", "a,,b"]):
        try:
            main(["launch", *bad, str(script)])
        except SystemExit as exit_:
            assert exit_.code == 2
        else:
            raise AssertionError(f"{bad} was accepted")
    assert "--hosts" in capsys.readouterr().err
