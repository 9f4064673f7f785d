"""bench_serving.py's second load generator: ``wrk`` (a C program, one thread driving every
connection with epoll) sending the binary tensor data extension's POST, as tritonclient.http
sends it, with a request id naming the image.

tritonclient's clients are Python: on a small machine each request costs them about as much
CPU as it costs the server, taken from the same cores. wrk costs a few microseconds per
request, so the servers get the cores. Its Lua script checks every answer: the status, the
id echoed back, and the outputs against offline predict's (relative 1e-4, absolute 1e-5, as
``_serving_load.py``); it prints one tagged JSON line in ``_serving_load.py``'s format.

    write_wrk_inputs(folder, images, expected)   # once: request bodies and answers
    wrk_command(url, model, folder, clients=64, seconds=5)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

from _serving_load import ATOL, RESULT_TAG, RTOL

SCRIPT_NAME = "infer.lua"
BODIES_NAME, INDEX_NAME, EXPECTED_NAME = "bodies.bin", "bodies.txt", "expected.f32"
WRK_TIMEOUT_S = 10  # a request unanswered this long counts as an error, as wrk's default 2 s would

# Each thread of wrk runs its own copy; ``done`` runs in the main one and sums the threads'.
LUA_SCRIPT = r"""
local ffi = require("ffi")
local folder
local requests, expected, outputs, images, next_image = {}, nil, 0, 0, 0
checked, wrong, refused, wrong_id = 0, 0, 0, 0

local function read(name)
  local file = assert(io.open(folder .. "/" .. name, "rb"))
  local text = file:read("*all")
  file:close()
  return text
end

function init(args)
  folder = args[1]
  local all, offset = read("@BODIES@"), 1
  for line in read("@INDEX@"):gmatch("[^\n]+") do
    local header, total = line:match("(%d+) (%d+)")
    header, total = tonumber(header), tonumber(total)
    -- Whole requests, formatted once: request() only hands the next one out.
    table.insert(requests, wrk.format("POST", args[2], {
      ["Content-Type"] = "application/octet-stream",
      ["Inference-Header-Content-Length"] = tostring(header),
    }, all:sub(offset, offset + total - 1)))
    offset = offset + total
  end
  images = #requests
  expected_text = read("@EXPECTED@")  -- a global: the floats below point into it
  expected = ffi.cast("const float*", expected_text)
  outputs = #expected_text / 4 / images
end

function request()
  next_image = next_image % images + 1
  return requests[next_image]
end

function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 then
    refused = refused + 1
    return
  end
  local length
  for name, value in pairs(headers) do
    if name:lower() == "inference-header-content-length" then length = tonumber(value) end
  end
  local id = length and tonumber(body:sub(1, length):match('"id"%s*:%s*"(%d+)"'))
  if not id or id >= images or #body ~= length + outputs * 4 then
    wrong_id = wrong_id + 1
    return
  end
  local got = ffi.cast("const float*", ffi.cast("const char*", body) + length)
  for k = 0, outputs - 1 do
    local want = expected[id * outputs + k]
    if math.abs(got[k] - want) > @ATOL@ + @RTOL@ * math.abs(want) then
      wrong = wrong + 1
      return
    end
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local totals = {checked = 0, wrong = 0, refused = 0, wrong_id = 0}
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do totals[key] = totals[key] + thread:get(key) end
  end
  local e = summary.errors
  io.write(string.format(
    '@TAG@{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "checked": %d, ' ..
    '"wrong": %d, "refused": %d, "wrong_id": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    totals.checked, totals.wrong, totals.refused, totals.wrong_id,
    e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_available() -> bool:
    """Whether the ``wrk`` program is on PATH."""
    return shutil.which("wrk") is not None


def write_wrk_inputs(folder: str, images, expected, input_name: str = "input",
                     request_ids: bool = True) -> None:  # fmt: skip
    """Writes wrk's inputs into ``folder``: one binary-extension request body per image (its
    id the image's index; ``request_ids=False`` leaves ids out, which the script counts as
    answers it cannot check), their lengths, the expected outputs as float32, the script."""
    import numpy as np

    bodies, index = [], []
    for i, image in enumerate(images):
        x = np.ascontiguousarray(image[None], dtype="<f4")
        fields = {"id": str(i)} if request_ids else {}
        header = json.dumps({
            **fields,
            "inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "parameters": {"binary_data_output": True},
        }, separators=(",", ":")).encode()  # fmt: skip
        bodies.append(header + x.tobytes())
        index.append(f"{len(header)} {len(bodies[-1])}")
    with open(os.path.join(folder, BODIES_NAME), "wb") as out:
        out.write(b"".join(bodies))
    with open(os.path.join(folder, INDEX_NAME), "w") as out:
        out.write("\n".join(index) + "\n")
    np.ascontiguousarray(expected, dtype="<f4").tofile(os.path.join(folder, EXPECTED_NAME))
    script = (LUA_SCRIPT.replace("@BODIES@", BODIES_NAME).replace("@INDEX@", INDEX_NAME)
              .replace("@EXPECTED@", EXPECTED_NAME).replace("@TAG@", RESULT_TAG)
              .replace("@ATOL@", repr(ATOL)).replace("@RTOL@", repr(RTOL)))  # fmt: skip
    with open(os.path.join(folder, SCRIPT_NAME), "w") as out:
        out.write(script)


def wrk_command(url: str, model: str, folder: str, clients: int, seconds: float) -> list[str]:
    """wrk's command line: ``clients`` connections from one thread for whole ``seconds``."""
    return ["wrk", "-t1", f"-c{clients}", f"-d{max(1, math.ceil(seconds))}s",
            f"--timeout={WRK_TIMEOUT_S}s", "-s", os.path.join(folder, SCRIPT_NAME),
            f"http://{url}", "--", folder, f"/v2/models/{model}/infer"]  # fmt: skip


def _correct_answers(run: dict) -> int:
    return run["checked"] - run["refused"] - run["wrong_id"] - run["wrong"]


def run_wrk(url: str, model: str, folder: str, clients: int, warmup_s: float,
            window_s: float) -> dict:  # fmt: skip
    """A warm-up run, then the timed run; the summary in ``_serving_load.py``'s format
    (``answered`` counts both runs' correct answers, as the server's CPU covers both)."""
    runs = []
    for seconds in (warmup_s, window_s):
        if seconds <= 0:
            continue
        proc = subprocess.run(wrk_command(url, model, folder, clients, seconds),
                              capture_output=True, text=True, check=False)  # fmt: skip
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not lines:
            tail = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-4:])
            raise RuntimeError(f"wrk failed against {url}: {tail}")
        runs.append(json.loads(lines[-1][len(RESULT_TAG) :]))
    window = runs[-1]
    errors = window["refused"] + window["wrong_id"] + window["socket_errors"]
    first_error = None
    if errors:
        first_error = (f"{window['refused']} non-200 answers, {window['wrong_id']} without the "
                       f"request's id, {window['socket_errors']} socket errors")  # fmt: skip
    duration_s, correct = window["duration_us"] / 1e6, _correct_answers(window)
    return {
        "clients": clients,
        "requests": correct,
        "throughput": correct / duration_s if duration_s else 0.0,
        "p50_ms": window["p50_us"] / 1e3,
        "p99_ms": window["p99_us"] / 1e3,
        "errors": errors,
        "wrong": window["wrong"],
        "first_error": first_error,
        "answered": sum(_correct_answers(run) for run in runs),
    }
