"""The shared thread pool under bursts of predictions with idle gaps between them.

Between bursts the pool's workers stop spinning and sleep; they wake late, in the middle
of later parallel regions. A late worker once claimed a task of the next region against the
previous region's task count: tasks ran twice or never, and a region could return while one
of its tasks still ran (crashes in benchmarks that idle between windows). Each prediction
here is checked against a NumPy forward pass; the script runs in a subprocess so that a
crash fails the test instead of killing the interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

TIMEOUT = 180

BURSTS_WITH_IDLE_GAPS = """
    import json, random, sys, time
    import numpy as np
    import gometal as gm

    threads, seconds = int(sys.argv[1]), float(sys.argv[2])
    gm.set_num_threads(threads)
    model = gm.ModelBuilder((64,)).dense(512).relu().dense(256).relu().dense(10).build(seed=0)
    w = model.get_weights()

    def reference(x):
        h = x.astype(np.float64)
        for i in range(3):
            h = h @ w[f"dense_{i}.weight"].T.astype(np.float64) + w[f"dense_{i}.bias"]
            h = np.maximum(h, 0.0) if i < 2 else h
        return h

    rng = np.random.default_rng(0)
    # Batches of different sizes give regions of different task counts.
    inputs = [rng.standard_normal((b, 64)).astype(np.float32) for b in (64, 3, 32, 1, 48)]
    expected = [reference(x) for x in inputs]
    pick = random.Random(0)
    calls, worst = 0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(pick.randint(1, 40)):
            i = pick.randrange(len(inputs))
            got = np.asarray(model.predict(inputs[i]), dtype=np.float64)
            scale = np.abs(expected[i]).max()
            worst = max(worst, float(np.abs(got - expected[i]).max() / scale))
            calls += 1
        time.sleep(pick.choice([0.0, 0.001, 0.005, 0.02, 0.1]))
    print(json.dumps({"calls": calls, "worst_relative_error": worst}))
"""


@pytest.mark.parametrize("threads", [2, 3])
def test_predictions_stay_exact_across_idle_gaps(threads: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BURSTS_WITH_IDLE_GAPS), str(threads), "3"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["calls"] > 0
    assert report["worst_relative_error"] < 1e-5, report
