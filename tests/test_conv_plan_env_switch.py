"""A convolution plan stays memory safe when a kernel switch changes between two of its runs.

The convolution gradients choose their kernel (Winograd's tiles, channel lanes, flipped
weights, im2col) at each run, reading ``GOMETAL_CONV_WINOGRAD`` and
``GOMETAL_CONV_WINOGRAD_GRAD``; the plan sizes its scratch once. Each case compiles a plan
under one setting, runs it, changes the setting and runs it again. The runs happen in a child
process, so a write past the scratch (a heap abort or a segfault) fails the test instead of
ending the test session; both runs' gradients are compared with torch in float64.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from gometal import _core

    op, variable, first, then, path = sys.argv[1:6]
    data = np.load(path)
    a, b = data["a"], data["b"]
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1,
             "shape": [int(v) for v in data["shape"]]}
    os.environ[variable] = first
    g = _core.Graph()
    ai, bi = g.input("a", a.shape, "float32"), g.input("b", b.shape, "float32")
    out = g.op(op, [ai, bi], attrs)
    engine = _core.Engine(g, seed=0)
    engine.define("grad", inputs=[ai, bi], outputs=[out], effects=[])
    before = engine.run("grad", [a, b])[0]
    os.environ[variable] = then
    after = engine.run("grad", [a, b])[0]
    np.savez(path, before=before, after=after)
    """
)

# (batch, input channels, plane, output channels): small channel counts that the default
# leaves off the tiles, and shapes that take the tiles by default.
_SHAPES = [(1, 3, 8, 4), (2, 16, 16, 16), (2, 32, 4, 256), (4, 64, 32, 8)]
_SWITCHES = [("never", "always"), ("", "always"), ("always", "never")]


def _run_python(code, *args, env=None):
    """Runs `code` in a child Python; a crash there (an abort, a segfault) fails the test."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def _run_child(tmp_path, op, variable, first, then, a, b, shape):
    path = tmp_path / "case.npz"
    np.savez(path, a=a, b=b, shape=np.array(shape))
    _run_python(_CHILD, op, variable, first, then, str(path))
    result = np.load(path)
    return result["before"], result["after"]


def _assert_close(name, got, want):
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 2e-5 * scale, f"{name}: max error {err:.3g} against torch (scale {scale:.3g})"


@pytest.mark.parametrize("first,then", _SWITCHES)
@pytest.mark.parametrize("n,c,plane,o", _SHAPES)
def test_weight_grad_plan_survives_a_switch_between_runs(tmp_path, n, c, plane, o, first, then):
    rng = np.random.default_rng(n * 1000 + c + o)
    x = rng.standard_normal((n, c, plane, plane)).astype(np.float32)
    dy = rng.standard_normal((n, o, plane, plane)).astype(np.float32)
    w_shape = (o, c, 3, 3)
    before, after = _run_child(
        tmp_path, "conv2d_weight_grad", "GOMETAL_CONV_WINOGRAD_GRAD", first, then, x, dy, w_shape
    )
    w = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    F.conv2d(torch.from_numpy(x).double(), w, padding=1).backward(torch.from_numpy(dy).double())
    _assert_close("first run", before, w.grad.numpy())
    _assert_close("run after the switch", after, w.grad.numpy())


@pytest.mark.parametrize("first,then", _SWITCHES)
@pytest.mark.parametrize("n,c,plane,o", _SHAPES)
def test_input_grad_plan_survives_a_switch_between_runs(tmp_path, n, c, plane, o, first, then):
    rng = np.random.default_rng(n * 1000 + c + o + 1)
    w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((n, o, plane, plane)).astype(np.float32)
    x_shape = (n, c, plane, plane)
    before, after = _run_child(
        tmp_path, "conv2d_input_grad", "GOMETAL_CONV_WINOGRAD", first, then, dy, w, x_shape
    )
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    F.conv2d(x, torch.from_numpy(w).double(), padding=1).backward(torch.from_numpy(dy).double())
    _assert_close("first run", before, x.grad.numpy())
    _assert_close("run after the switch", after, x.grad.numpy())


_BAD_VALUE_CHILD = textwrap.dedent(
    """
    import os
    import numpy as np
    from gometal import _core

    _core.set_num_threads(2)
    rng = np.random.default_rng(0)
    dy = rng.standard_normal((4, 64, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "shape": [4, 32, 8, 8]}
    g = _core.Graph()
    dyi, wi = g.input("dy", dy.shape, "float32"), g.input("w", w.shape, "float32")
    dx = g.op("conv2d_input_grad", [dyi, wi], attrs)
    engine = _core.Engine(g, seed=0)
    engine.define("dx", inputs=[dyi, wi], outputs=[dx], effects=[])
    first = engine.run("dx", [dy, w])[0]
    os.environ["GOMETAL_CONV_WINOGRAD"] = "sometimes"
    try:
        engine.run("dx", [dy, w])
    except ValueError as error:
        print("raised:", error)
    os.environ["GOMETAL_CONV_WINOGRAD"] = ""
    again = engine.run("dx", [dy, w])[0]
    print("same:", bool(np.array_equal(first, again)))
    """
)


def test_a_bad_switch_set_between_runs_raises_from_the_pool_tasks():
    # The input gradient chooses its kernel per image, inside the thread pool's tasks: the
    # error must come back to Python as an exception, and the plan must run again after it.
    out = _run_python(_BAD_VALUE_CHILD, env={**os.environ, "GOMETAL_CONV_WINOGRAD": ""})
    assert "raised: [conv2d] GOMETAL_CONV_WINOGRAD must be always or never, got 'sometimes'" in out
    assert "same: True" in out
