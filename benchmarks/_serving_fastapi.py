"""The baseline of bench_serving.py: the model in onnxruntime behind a plain FastAPI endpoint,
one ``session.run`` per request (no batching), served by uvicorn, as a user would write it.
It answers the Open Inference Protocol's ``POST /v2/models/{name}/infer`` for one model, with
JSON tensors or the binary tensor data extension, so tritonclient can load it unchanged.

    python _serving_fastapi.py MODEL.onnx NAME --port 8100 --threads 2
"""

import argparse
import json

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

_DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}
_NAMES = {np.dtype(v): k for k, v in _DATATYPES.items()}


def _input_array(header: dict, binary: bytes) -> np.ndarray:
    tensor = header["inputs"][0]
    dtype = _DATATYPES[tensor["datatype"]]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        data = np.frombuffer(binary[:size], dtype=dtype)
    else:
        data = np.asarray(tensor["data"], dtype=dtype)
    return data.reshape(tensor["shape"])


def create_app(model_path: str, name: str, threads: int) -> FastAPI:
    """The FastAPI app serving ``model_path`` as ``name`` with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {}

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        if model != name:
            raise HTTPException(404, f"unknown model {model!r}")
        body = await request.body()
        header_length = request.headers.get("inference-header-content-length")
        split = int(header_length) if header_length else len(body)
        header = json.loads(body[:split])
        x = _input_array(header, body[split:])
        # session.run releases the GIL: run it off the event loop, as FastAPI runs sync code.
        outputs = await run_in_threadpool(session.run, None, {input_name: x})
        out_name = session.get_outputs()[0].name
        result = np.ascontiguousarray(outputs[0])
        tensor = {"name": out_name, "datatype": _NAMES[result.dtype], "shape": list(result.shape)}
        answer = {"model_name": name, "outputs": [tensor]}
        if "id" in header:  # the protocol echoes the request's id
            answer["id"] = header["id"]
        if (header.get("parameters") or {}).get("binary_data_output"):
            raw = result.tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            text = json.dumps(answer).encode()
            headers = {"Inference-Header-Content-Length": str(len(text))}
            return Response(text + raw, media_type="application/octet-stream", headers=headers)
        tensor["data"] = result.ravel().tolist()
        return Response(json.dumps(answer), media_type="application/json")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_path")
    parser.add_argument("name")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    app = create_app(args.model_path, args.name, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
