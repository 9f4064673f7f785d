"""The backend is chosen where an engine is made: Trainer(backend=...), Model(backend=...),
or $GOMETAL_BACKEND, with a clear error for a backend this build lacks."""

import subprocess
import sys

import numpy as np
import pytest

import gometal as gm
from gometal import _core


def _model(**kwargs):
    x = gm.Input((4,))
    return gm.Model(x, gm.layers.Dense(2)(x), **kwargs)


def test_the_cpu_backend_is_the_default_and_can_be_named():
    trainer = gm.Trainer(_model(), loss="mse", optimizer="sgd", backend="cpu")
    assert trainer.backend == "cpu"
    assert trainer._engine.backend_info()["backend"] == "cpu"
    assert _model().backend == "cpu"


@pytest.mark.parametrize("where", ["trainer", "model"])
def test_an_unknown_backend_is_refused_by_name(where):
    with pytest.raises(ValueError, match=r"backend must be one of \('cpu', 'metal'\), got 'tpu'"):
        if where == "trainer":
            gm.Trainer(_model(), loss="mse", backend="tpu")
        else:
            _model(backend="tpu")


def test_metal_is_used_where_built_and_a_clear_error_elsewhere():
    if _core.metal_available():
        assert gm.Trainer(_model(), loss="mse", optimizer="sgd", backend="metal").backend == "metal"
        return
    with pytest.raises(ValueError, match="built without the Metal backend .* use 'cpu'"):
        gm.Trainer(_model(), loss="mse", backend="metal")


def test_the_environment_variable_chooses_the_default_backend():
    code = (
        "import gometal as gm\n"
        "x = gm.Input((4,))\n"
        "try:\n"
        "    gm.Model(x, gm.layers.Dense(2)(x))\n"
        "except ValueError as err:\n"
        "    print(err)\n"
    )
    env = {"GOMETAL_BACKEND": "tpu", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "GOMETAL_BACKEND must be one of ('cpu', 'metal'), got 'tpu'" in out


def test_backend_options_reach_the_cpu_backend():
    g = _core.Graph()
    x = g.input("x", (-1, 3))
    y = g.op("relu", [x])
    engine = _core.Engine(g, options={"threads": 1, "sample_tiling": False})
    info = engine.backend_info()
    assert info["threads"].startswith("1 ") and info["sample_tiling"] == "off"
    assert "blas" in info
    engine.define("f", inputs=[x], outputs=[y])
    np.testing.assert_array_equal(
        engine.run("f", [np.array([[-1, 2, 0]], np.float32)])[0], [[0, 2, 0]]
    )
    with pytest.raises(ValueError, match="unknown backend option 'thread'"):
        _core.Engine(g, options={"thread": 1})
    with pytest.raises(TypeError, match="'sample_tiling' must be True or False"):
        _core.Engine(g, options={"sample_tiling": 1})
