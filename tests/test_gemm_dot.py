"""A B^T with few rows of A and a deep K (a Dense layer's forward on a flattened feature map)
on the dot-product tile: against NumPy float64 at the tile's edges, on 1 to 3 threads, with
NaN in a row, forced to the BLAS and back, and inside B's classifier step against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpu_paths import X86
from gometal import _core
from matmul_checks import check_product

pytestmark = pytest.mark.usefixtures("restore_threads")


# (M, N, K): 25 to 64 rows and K from 1024 take the tile (AVX-512); the others the BLAS.
INSIDE = [
    (25, 1, 1024),  # one column, the fewest rows
    (32, 128, 4096),  # workload B's classifier
    (64, 130, 1031),  # the most rows; N % 4 = 2 and K % 16 = 7 left over
    (33, 5, 2048),  # one row and one column past whole tiles
    (63, 67, 1500),
]
OUTSIDE = [(24, 64, 2048), (65, 64, 2048), (40, 64, 1023)]


@pytest.mark.parametrize("threads", (1, 2, 3))
@pytest.mark.parametrize("m, n, k", INSIDE + OUTSIDE)
def test_products_match_numpy(m, n, k, threads):
    check_product(False, True, m, n, k, threads, seed=m + n)


@pytest.mark.parametrize("nan_row", (0, 31))
def test_nan_in_a_row_of_a_stays_in_its_row(nan_row):
    check_product(False, True, 32, 64, 2048, 2, nan_row=nan_row)


@pytest.mark.parametrize("m, n, k", INSIDE[:2] + OUTSIDE)
def test_the_variable_is_read_only_for_the_shapes_the_tile_takes(m, n, k, monkeypatch):
    # A bad value shows which products consult it; "blas" gives the same answers.
    monkeypatch.setenv("GOMETAL_GEMM_DOT_KERNEL", "bogus")
    if X86 and (m, n, k) in INSIDE:
        with pytest.raises(ValueError, match="GOMETAL_GEMM_DOT_KERNEL"):
            check_product(False, True, m, n, k, 1)
    else:
        check_product(False, True, m, n, k, 1)
    monkeypatch.setenv("GOMETAL_GEMM_DOT_KERNEL", "blas")
    check_product(False, True, m, n, k, 2)


@pytest.mark.parametrize("threads", (1, 2))
def test_a_classifier_step_on_a_flattened_map_matches_torch(threads):
    # relu(x w^T + b) and its gradients for 32 images of 64 x 8 x 8 features, as workload B.
    _core.set_num_threads(threads)
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((32, 4096)).astype(np.float32)
    w = (rng.standard_normal((128, 4096)) / 64).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    g = _core.Graph()
    xi = g.input("x", x.shape, "float32")
    wv, bv = g.variable("w", w.shape), g.variable("b", b.shape)
    h = g.op("relu", [g.op("add", [g.op("matmul", [xi, wv], {"transpose_b": True}), bv])])
    loss = g.op("sum", [g.op("mul", [h, h])], {"axes": []})
    grads = g.gradients(loss, [xi, wv, bv])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", w)
    engine.set_variable("b", b)
    engine.define("step", inputs=[xi], outputs=[loss, *grads], effects=[])
    got = engine.run("step", [x])
    xt, wt, bt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, w, b))
    want_loss = (torch.relu(xt @ wt.T + bt) ** 2).sum()
    want_loss.backward()
    np.testing.assert_allclose(got[0], want_loss.item(), rtol=1e-5)
    for value, ref in zip(got[1:], (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(
            value, ref.numpy(), rtol=1e-4, atol=1e-4 * np.abs(ref.numpy()).max()
        )
