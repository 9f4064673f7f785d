"""Small-batch inference latency, for serving: gometal's ``model.predict`` against
onnxruntime's ``session.run`` on the MLP of workload A and the CNN of workload C.

For each model and batch size (1, 8 and 32 by default) two child processes are alive at
once, gometal's and onnxruntime's, and they take timed windows in turn, so both meet the same
machine conditions. Each window times single calls; a row reports the median latency of every
call over all windows. onnxruntime runs the faster of the torch export and gometal's own export
of the model (see _onnxruntime.fastest_export).

The call floor is reported separately: the median latency of the same framework on a model
with the same input and almost no compute (Flatten, then one Dense unit), i.e. what a call
costs before any work: argument checks, conversion and the hand-off to native code.

Target (issue 18): gometal's median latency <= onnxruntime's at every size.

Usage:
  python benchmarks/bench_latency.py                      # 2 threads, 5 windows of 1 s
  python benchmarks/bench_latency.py --threads 1 --batches 1,8 --models mlp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _child import UNSET_VARS, reexec_with_clean_environment
from _runner import pin_cpus
from _workload import FEATURES, IMAGE_SHAPE, WORKLOADS, make_batch

MODELS = {"mlp": "A", "cnn": "C"}  # model -> the workload whose model it is
FRAMEWORKS = ("gometal", "onnxruntime")
READY, WINDOW = "LATENCY_READY", "LATENCY_WINDOW "


def _inputs(model: str, batch: int):
    x, _ = make_batch(MODELS[model])
    return x[:batch].copy()


def _gometal_calls(model: str, x, threads: int):
    import gometal as gm
    from _frameworks import gometal_model

    gm.set_num_threads(threads)
    net = gometal_model(gm, WORKLOADS[MODELS[model]])
    shape = (FEATURES,) if model == "mlp" else IMAGE_SHAPE
    floor = gm.ModelBuilder(input_shape=shape).flatten().dense(1).build(seed=0)
    return (lambda: net.predict(x)), (lambda: floor.predict(x)), {"version": gm.__version__}


def _floor_session(ort, x, threads: int):
    # Flatten, then a (features, 1) MatMul: the same input and almost no compute.
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod(x.shape[1:]))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "floor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.shape[0], 1])],
        [numpy_helper.from_array(np.zeros((features, 1), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        onnx.shape_inference.infer_shapes(model).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    return lambda: session.run(None, {"x": x})[0]


def _onnxruntime_calls(model: str, x, threads: int):
    import onnxruntime as ort

    from _onnxruntime import fastest_export

    call, info = fastest_export(MODELS[model], x, threads)
    return call, _floor_session(ort, x, threads), info


def _latencies(call, window_s: float) -> list[float]:
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < window_s or len(times) < 5:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def run_child(framework: str, model: str, batch: int, args) -> int:
    """Warm up, report the call floor, then time one window per "window" line on stdin."""
    x = _inputs(model, batch)
    build = _gometal_calls if framework == "gometal" else _onnxruntime_calls
    call, floor, info = build(model, x, args.threads)
    _latencies(call, args.warmup_s)
    floor_ms = 1e3 * statistics.median(_latencies(floor, min(args.window_s, 0.5)))
    print(READY + " " + json.dumps({"floor_ms": floor_ms, "info": info}, default=str), flush=True)
    for line in sys.stdin:
        if line.strip() != "window":
            break
        print(WINDOW + json.dumps(_latencies(call, args.window_s)), flush=True)
    return 0


def _read(proc, tag: str) -> str:
    for line in proc.stdout:
        if line.startswith(tag):
            return line[len(tag) :].strip()
    raise RuntimeError(f"child exited without {tag.strip()}: {proc.stderr.read()[-800:]}")


def measure(model: str, batch: int, args, pin) -> dict:
    """Both frameworks' latencies on one model and batch size, their windows interleaved."""
    children = {}
    for framework in FRAMEWORKS:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", framework]
        cmd += ["--model", model, "--batch", str(batch), "--threads", str(args.threads)]
        cmd += ["--warmup-s", str(args.warmup_s), "--window-s", str(args.window_s)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if pin:
            os.sched_setaffinity(proc.pid, pin)
        children[framework] = proc
    try:
        ready = {name: json.loads(_read(proc, READY)) for name, proc in children.items()}
        latencies: dict[str, list[float]] = {name: [] for name in children}
        for index in range(args.windows):
            order = list(children) if index % 2 == 0 else list(reversed(children))
            for name in order:
                children[name].stdin.write("window\n")
                children[name].stdin.flush()
                latencies[name] += json.loads(_read(children[name], WINDOW))
    finally:
        for proc in children.values():
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait(timeout=60)
    row = {"model": model, "batch": batch}
    for name in children:
        row[name] = {
            "median_ms": 1e3 * statistics.median(latencies[name]),
            "p90_ms": 1e3 * statistics.quantiles(latencies[name], n=10)[-1],
            "calls": len(latencies[name]),
            "floor_ms": ready[name]["floor_ms"],
            "info": ready[name]["info"],
        }
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp,cnn")
    p.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-s", type=float, default=1.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--json", metavar="OUT", help="write the rows to this JSON file")
    p.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return run_child(args.child, args.model, args.batch, args)
    reexec_with_clean_environment(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    bad = [m for m in models if m not in MODELS] + [str(b) for b in batches if b < 1]
    if bad or args.windows < 1 or args.window_s <= 0:
        raise SystemExit(f"bad --models/--batches/--windows/--window-s: {bad or args}")
    pin = pin_cpus(args.threads)
    print(
        f"gometal latency benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {args.threads} threads per framework; {args.windows} "
        f"interleaved windows of {args.window_s:g} s; {' and '.join(UNSET_VARS)} unset"
    )
    head = (
        f"  {'model':<5} {'batch':>5} {'gometal ms':>11} {'ORT ms':>9} {'ORT/gometal':>12} "
        f"{'gm floor ms':>12} {'ORT floor ms':>13} {'ORT export':>11}  target"
    )
    print(head + "\n  " + "-" * (len(head) - 2))
    rows, missed = [], []
    for model in models:
        for batch in batches:
            row = measure(model, batch, args, pin)
            rows.append(row)
            gm, ort = row["gometal"], row["onnxruntime"]
            met = gm["median_ms"] <= ort["median_ms"]
            if not met:
                missed.append(f"{model}@{batch}")
            print(
                f"  {model:<5} {batch:>5} {gm['median_ms']:>11.3f} {ort['median_ms']:>9.3f} "
                f"{ort['median_ms'] / gm['median_ms']:>11.2f}x {gm['floor_ms']:>12.3f} "
                f"{ort['floor_ms']:>13.3f} {ort['info'].get('timed_export', '?'):>11}  "
                f"{'met' if met else 'MISSED'}",
                flush=True,
            )
    print(
        "  ORT/gometal > 1: gometal is faster; floor: the same call on a model with the same "
        "input and almost no compute"
    )
    if missed:
        print(f"  target (gometal median <= onnxruntime's) missed at: {', '.join(missed)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
