"""Weight-gradient products A^T B summed over K in one part per thread (each thread its own
rows, then the partials added): against NumPy float64 and torch, where K splits evenly and
not, on 2 and 3 threads, with NaN in a row, and inside a training step of D's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gometal import _core
from matmul_checks import check_product

# The split runs where the A^T B register tile does (AVX-512); elsewhere the same products run
# on the BLAS and must give the same answers.


pytestmark = pytest.mark.usefixtures("restore_threads")


# (M, N, K, threads): K of at least 256 per thread splits; 511 on 2 threads does not.
DEPTH_SPLIT = [
    (128, 384, 768, 2),  # D's q/k/v weight gradient
    (512, 128, 768, 2),  # D's second MLP weight
    (25, 64, 513, 2),  # uneven halves, the tile's fewest rows
    (97, 192, 770, 3),  # three uneven parts, rows not a multiple of the tile's 6
    (43, 128, 4097, 2),  # each part past 1024 steps: chunks of K within a part
    (64, 64, 511, 2),  # 255 steps a thread: C's rows split instead
]


@pytest.mark.parametrize("m, n, k, threads", DEPTH_SPLIT)
def test_summed_over_depth_parts_matches_numpy(m, n, k, threads):
    check_product(True, False, m, n, k, threads, seed=k)


@pytest.mark.parametrize("nan_row", (0, 599))
def test_nan_stays_in_its_row_of_c(nan_row):
    # Column `nan_row` of A is row `nan_row` of op(A) = A^T: it enters both parts' sums of
    # that row of C, and no other row.
    check_product(True, False, 600, 64, 600, 2, nan_row=nan_row)


def _dense_weight_gradient(x, dy, threads):
    # dW = dy^T x of y = x W^T: the engine's gradient of sum(y * dy).
    _core.set_num_threads(threads)
    g = _core.Graph()
    xi = g.input("x", x.shape, "float32")
    gi = g.input("dy", dy.shape, "float32")
    w = g.variable("w", (dy.shape[1], x.shape[1]))
    y = g.op("matmul", [xi, w], {"transpose_b": True})
    loss = g.op("sum", [g.op("mul", [y, gi])], {"axes": []})
    (grad,) = g.gradients(loss, [w])
    engine = _core.Engine(g, seed=0)
    engine.set_variable("w", np.zeros((dy.shape[1], x.shape[1]), np.float32))
    engine.define("step", inputs=[xi, gi], outputs=[grad], effects=[])
    return engine.run("step", [x, dy])[0]


@pytest.mark.parametrize("n_out, n_in", [(384, 128), (128, 512)])
def test_a_weight_gradient_over_d_batch_rows_matches_torch(n_out, n_in):
    # 12 x 64 rows, as D's batch: the product sums 384 rows on each of 2 threads.
    rng = np.random.default_rng(n_out)
    x = rng.standard_normal((768, n_in)).astype(np.float32)
    dy = rng.standard_normal((768, n_out)).astype(np.float32)
    xt = torch.tensor(x, dtype=torch.float64)
    w = torch.zeros((n_out, n_in), dtype=torch.float64, requires_grad=True)
    (xt @ w.T * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    want = w.grad.numpy()
    for threads in (1, 2):
        got = _dense_weight_gradient(x, dy, threads)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * 768)
