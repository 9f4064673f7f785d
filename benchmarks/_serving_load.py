"""The load generator of bench_serving.py, run in its own process: N concurrent
tritonclient async clients (HTTP, or gRPC with ``--grpc``, on streams with ``--stream``),
each sending one image per request in a loop, for a warm-up and then a timed window. Prints one tagged JSON line: requests answered in the window,
throughput, p50/p99 latency, errors, and answers that differ from the offline reference.

    python _serving_load.py URL MODEL INPUT_NAME IMAGES.npy EXPECTED.npy --clients 8 --window-s 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

RESULT_TAG = "LOAD_RESULT "
# Served answers may come from merged batches, whose kernels sum in another order than one
# image alone: compare within float32 rounding of a few thousand products.
RTOL, ATOL = 1e-4, 1e-5


def percentile_ms(latencies_s: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``latencies_s`` in milliseconds (None when empty)."""
    return float(np.percentile(latencies_s, q) * 1e3) if latencies_s else None


class StreamCaller:
    """One client's gRPC stream (``ModelStreamInfer``), asked one request at a time."""

    def __init__(self, client, model: str):
        self.model = model
        self._requests: asyncio.Queue = asyncio.Queue()
        self._answers = client.stream_infer(self._inputs())

    async def _inputs(self):
        while (request := await self._requests.get()) is not None:
            yield request

    async def __call__(self, tensor):
        self._requests.put_nowait({"model_name": self.model, "inputs": [tensor]})
        result, error = await self._answers.__anext__()
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        self._requests.put_nowait(None)
        self._answers.cancel()


async def _client_loop(client, triton, failures, args, images, expected, offset, clock) -> dict:
    """One client: unary calls, or one request at a time on its own stream."""
    stream = StreamCaller(client, args.model) if args.stream else None
    try:
        return await _requests_in_turn(client, stream, triton, failures, args, images, expected,
                                       offset, clock)  # fmt: skip
    finally:
        if stream is not None:
            stream.close()


async def _requests_in_turn(client, stream, triton, failures, args, images, expected, offset,
                            clock) -> dict:  # fmt: skip
    latencies, errors, wrong, first_error, answered = [], 0, 0, None, 0
    # Only answered requests count: a failure that comes back fast is no throughput.
    index = offset
    while True:
        start = time.perf_counter()
        if start >= clock["stop"]:
            break
        image = images[index % len(images)][None]
        tensor = triton.InferInput(args.input_name, list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        try:
            if stream is not None:
                result = await stream(tensor)
            else:
                result = await client.infer(args.model, [tensor])
            answer = result.as_numpy(output_name(result))[0]
            correct = np.allclose(answer, expected[index % len(images)], rtol=RTOL, atol=ATOL)
            wrong += not correct
        except failures as error:  # every failure is counted and the first one shown
            errors, correct = errors + 1, False
            first_error = first_error or f"{type(error).__name__}: {error}"[:300]
            await asyncio.sleep(0.01)  # an overloaded server's retry hint, roughly
        end = time.perf_counter()
        answered += correct
        if correct and start >= clock["begin"] and end <= clock["stop"]:
            latencies.append(end - start)
        index += 1
    return {"latencies": latencies, "errors": errors, "wrong": wrong,
            "first_error": first_error, "answered": answered}  # fmt: skip


def output_name(result) -> str:
    """The first output's name in a tritonclient answer (HTTP: a dict; gRPC: a message)."""
    response = result.get_response()
    if isinstance(response, dict):
        return response["outputs"][0]["name"]
    return response.outputs[0].name


async def run_load(args) -> dict:
    """Runs the clients and returns the window's summary."""
    from aiohttp import ClientError
    from tritonclient.utils import InferenceServerException

    failures = (InferenceServerException, ClientError, OSError, asyncio.TimeoutError)

    images = np.load(args.images)
    expected = np.load(args.expected)
    if args.grpc:
        import tritonclient.grpc as triton
        import tritonclient.grpc.aio as triton_aio

        client = triton_aio.InferenceServerClient(args.url)
    else:
        import tritonclient.http as triton
        import tritonclient.http.aio as triton_aio

        client = triton_aio.InferenceServerClient(args.url, conn_limit=max(100, args.clients))
    try:
        now = time.perf_counter()
        clock = {"begin": now + args.warmup_s, "stop": now + args.warmup_s + args.window_s}
        loops = [
            _client_loop(client, triton, failures, args, images, expected, i, clock)
            for i in range(args.clients)
        ]
        results = await asyncio.gather(*loops)
    finally:
        await client.close()
    latencies = [t for r in results for t in r["latencies"]]
    return {
        "clients": args.clients,
        "requests": len(latencies),
        "throughput": len(latencies) / args.window_s,
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "errors": sum(r["errors"] for r in results),
        "wrong": sum(r["wrong"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        # Every correct answer, warm-up included: the server's CPU time is shared by them.
        "answered": sum(r["answered"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="host:port of the server's HTTP (or gRPC) endpoint")
    parser.add_argument("model")
    parser.add_argument("input_name")
    parser.add_argument("images", help=".npy of (K, C, H, W) float32 images sent in turn")
    parser.add_argument("expected", help=".npy of the K offline answers")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--grpc", action="store_true", help="tritonclient.grpc.aio clients")
    parser.add_argument("--stream", action="store_true",
                        help="with --grpc: each client sends on its own ModelStreamInfer stream")  # fmt: skip
    args = parser.parse_args()
    if args.stream and not args.grpc:
        parser.error("--stream needs --grpc")
    print(RESULT_TAG + json.dumps(asyncio.run(run_load(args))), flush=True)


if __name__ == "__main__":
    main()
