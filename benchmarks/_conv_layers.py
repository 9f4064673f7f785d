"""bench_conv.py --layers: the CNNs' fused inference layers, gometal's forward kernels
("never": pixel lanes, "always": channel lanes, "winograd": Winograd F(2x2, 3x3) tiles; "rule":
the variables unset, the shape rules choosing) against onnxruntime (MLAS) on the same layer. Windows of the three are interleaved; it prints the median CPU milliseconds
per batch of each, the ratios to onnxruntime, and the other processes' load."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from _timing import time_window

# (name, in channels, out channels, plane side, batch norm): workload C's CNN on 64x64
# images, then the batch-norm CNN of bench_int8_cnn.py on 32x32 ones.
LAYERS = [
    ("C conv1", 3, 16, 64, False),
    ("C conv2", 16, 32, 32, True),
    ("C conv3", 32, 64, 16, False),
    ("BN conv1", 3, 16, 32, True),
    ("BN conv2", 16, 32, 16, True),
    ("BN conv3", 32, 64, 8, True),
]
# Each kernel's environment: the variables that force it.
KERNELS = {
    "never": {"GOMETAL_CONV_NCHWC": "never", "GOMETAL_CONV_WINOGRAD": "never"},
    "always": {"GOMETAL_CONV_NCHWC": "always", "GOMETAL_CONV_WINOGRAD": "never"},
    "winograd": {"GOMETAL_CONV_WINOGRAD": "always"},
    "rule": {},
}


def _gometal_layer(c: int, o: int, side: int, batch_norm: bool, weights: dict):
    """An engine running conv, bias (or scale and shift), ReLU and 2x2 max pooling."""
    from gometal import _core

    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    g = _core.Graph()
    x = g.input("x", (-1, c, side, side), "float32")
    y = g.op("conv2d", [x, g.variable("w", (o, c, 3, 3))], attrs)
    y = g.op("add", [y, g.variable("b", (o, 1, 1))])
    if batch_norm:
        y = g.op("mul", [y, g.variable("scale", (o, 1, 1))])
        y = g.op("add", [y, g.variable("shift", (o, 1, 1))])
    y = g.op("max_pool2d", [g.op("relu", [y])], {"kernel_size": [2, 2]})
    engine = _core.Engine(g, seed=0)
    engine.define("f", inputs=[x], outputs=[y], effects=[])
    for name, value in weights.items():
        if batch_norm or name not in ("scale", "shift"):
            engine.set_variable(name, value)
    return engine


def _onnxruntime_layer(c: int, o: int, side: int, weights: dict, threads: int):
    """An onnxruntime session of Conv (batch norm folded into its weights), Relu, MaxPool."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    scale = weights["scale"].reshape(o)
    w = weights["w"] * scale[:, None, None, None]
    b = weights["b"].reshape(o) * scale + weights["shift"].reshape(o)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _cpu_ms(step) -> tuple[float, float | None]:
    """CPU milliseconds of this process per call over one window, and the other load."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rate, load = time_window(step, 0.5)
    calls = max(1, round(rate * (time.perf_counter() - wall0)))
    return (time.process_time() - cpu0) / calls * 1e3, load


def compare_layers(batch: int, threads: int, windows: int) -> None:
    """Times every layer of LAYERS with each kernel and onnxruntime, windows interleaved.

    Args:
        batch: images per call.
        threads: threads of gometal and of onnxruntime's intra-op pool.
        windows: timed windows of each.

    Example:
        >>> compare_layers(256, 1, 5)  # doctest: +SKIP
    """
    import gometal as gm

    gm.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"batch {batch}, {threads} thread(s); median CPU ms per batch (ratio: onnxruntime / it)")
    for name, c, o, side, batch_norm in LAYERS:
        weights = {
            "w": rng.standard_normal((o, c, 3, 3), dtype=np.float32) * 0.2,
            "b": rng.standard_normal((o, 1, 1), dtype=np.float32),
            "scale": rng.uniform(0.5, 1.5, (o, 1, 1)).astype(np.float32),
            "shift": rng.standard_normal((o, 1, 1), dtype=np.float32),
        }
        if not batch_norm:
            weights["scale"] = np.ones((o, 1, 1), np.float32)
            weights["shift"] = np.zeros((o, 1, 1), np.float32)
        x = rng.standard_normal((batch, c, side, side), dtype=np.float32)
        median, loads = _time_layer(c, o, side, batch_norm, weights, x, threads, windows)
        ort_ms = median["onnxruntime"]
        cells = "  ".join(
            f"{label} {ms:7.3f} ({ort_ms / ms:4.2f}x)"
            for label, ms in median.items()
            if label != "onnxruntime"
        )
        print(
            f"  {name:9s} {c:2d}->{o:2d} at {side:2d}x{side:<2d}  onnxruntime {ort_ms:7.3f}  {cells}"
            f"  (other load {min(loads):.2f}-{max(loads):.2f} cores)"
        )


def _time_layer(c, o, side, batch_norm, weights, x, threads, windows):
    """Median CPU ms per call of onnxruntime and each kernel, and the other loads seen."""
    engine = _gometal_layer(c, o, side, batch_norm, weights)
    session = _onnxruntime_layer(c, o, side, weights, threads)
    steps = {"onnxruntime": lambda: session.run(None, {"x": x})}
    for kernel in KERNELS:
        steps[kernel] = lambda kernel=kernel: _run_with(engine, x, kernel)
    reference = session.run(None, {"x": x})[0]
    for kernel in KERNELS:
        np.testing.assert_allclose(_run_with(engine, x, kernel), reference, rtol=1e-3, atol=1e-3)
    times = {label: [] for label in steps}
    loads = []
    for _ in range(windows):
        for label, step in steps.items():
            ms, load = _cpu_ms(step)
            times[label].append(ms)
            loads.append(load or 0.0)
    return {label: statistics.median(values) for label, values in times.items()}, loads


def _run_with(engine, x: np.ndarray, kernel: str):
    """Runs the layer with KERNELS[kernel]'s variables set (read on every call)."""
    os.environ.update(KERNELS[kernel])
    try:
        return engine.run("f", [x])[0]
    finally:
        for name in KERNELS[kernel]:
            os.environ.pop(name, None)
