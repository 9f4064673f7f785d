"""ONNX backend node tests for the operators ``gometal.onnx.importer`` supports.

The onnx wheel ships the generator scripts of its node tests, not their data. The data is
written here into a temporary folder (``model.onnx`` plus ``test_data_set_0/input_j.pb``
and ``output_j.pb``, the backend test layout), read back and run through gometal.

gometal models take one runtime input, so a case's further inputs (weights, a second
operand, bounds) are bound as initializers holding the case's values; the first output
is compared with ``assert_allclose`` at the case's own rtol/atol. Cases gometal cannot
express are listed in ``EXPECTED_UNSUPPORTED`` with the reason the importer (or this
harness) gives; each is checked to be refused with that reason, and the whole list is
reported in one warning (pytest's warnings summary).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from gometal.io.onnx.importer import SUPPORTED_OPS, OnnxImportError, load
from onnx_node_cases_spatial import SPATIAL_UNSUPPORTED

_3D = "only 1-D and 2-D pooling are supported"
_DTYPE = "input dtype"
_NON_TENSOR = "non-tensor input"
_SHAPE_OUTPUT = "integer tensor computed from shapes"

# case name -> a fragment of the reason it is rejected.
EXPECTED_UNSUPPORTED = {
    **{f"test_{op}_{t}": _DTYPE for op in ("add", "sub", "mul") for t in
       ("int16", "int8", "uint16", "uint32", "uint64", "uint8")},
    **{f"test_div_{t}": _DTYPE for t in
       ("int16", "int32_trunc", "int8", "uint16", "uint32", "uint64", "uint8")},
    "test_clip_default_int8_inbounds": _DTYPE,
    "test_clip_default_int8_inbounds_expanded": _DTYPE,
    "test_clip_default_int8_max": _DTYPE,
    "test_clip_default_int8_min": _DTYPE,
    "test_maxpool_2d_uint8": _DTYPE,
    **{name: _3D for name in (
        "test_averagepool_3d_default",
        "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
        "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
        "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False",
        "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True",
        "test_averagepool_3d_dilations_small",
        "test_maxpool_3d_default",
        "test_maxpool_3d_dilations",
        "test_maxpool_3d_dilations_use_ref_impl",
        "test_maxpool_3d_dilations_use_ref_impl_large",
    )},
    "test_averagepool_2d_dilations": "dilations [2, 2] are not supported",
    "test_maxpool_2d_dilations": "dilations [2, 2] are not supported",
    "test_batchnorm_epsilon_training_mode": "training_mode=1 is not supported",
    "test_batchnorm_example_training_mode": "training_mode=1 is not supported",
    **{name: "training_mode=True with ratio > 0 is random" for name in (
        "test_training_dropout",
        "test_training_dropout_default",
        "test_training_dropout_default_mask",
        "test_training_dropout_mask",
    )},
    "test_identity_opt": _NON_TENSOR,
    "test_identity_sequence": _NON_TENSOR,
    "test_constant": "no runtime input",
    "test_reshape_allowzero_reordered": "dimension 0 must be positive",
    # Shape, Gather and Slice compute Reshape targets; a model's output must be float data.
    **{f"test_shape{suffix}": _SHAPE_OUTPUT for suffix in (
        "", "_example", "_clip_end", "_clip_start", "_end_1", "_end_negative_1", "_start_1",
        "_start_1_end_2", "_start_1_end_negative_1", "_start_greater_than_end",
        "_start_negative_1",
    )},
    **{f"test_gather_{suffix}": "Gather is supported on shape tensors" for suffix in (
        "0", "1", "2d_indices", "negative_indices",
    )},
    **{f"test_slice{suffix}": "Slice is supported on shape tensors" for suffix in (
        "", "_default_axes", "_default_steps", "_end_out_of_bounds", "_neg", "_neg_steps",
        "_negative_axes", "_start_out_of_bounds",
    )},
    **{f"test_causal_conv_with_state_{suffix}_expanded": "Slice is supported on shape tensors"
       for suffix in ("decode_step", "with_bias_and_past_state", "with_past_state")},
    **SPATIAL_UNSUPPORTED,
}  # fmt: skip


def _collect() -> dict[str, object]:
    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():
        # Some generators (casts, reductions) overflow on purpose while building data.
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    return {
        case.name: case
        for case in cases
        if case.model is not None
        and all(
            n.op_type in SUPPORTED_OPS and n.domain in ("", "ai.onnx")
            for n in case.model.graph.node
        )
    }


CASES = _collect()


def _is_tensor(value_info: object) -> bool:
    return value_info.type.HasField("tensor_type")  # type: ignore[attr-defined]


def _write_case(case: object, folder: Path) -> None:
    """Writes one case in the backend test data layout (tensor inputs and outputs only)."""
    model = case.model  # type: ignore[attr-defined]
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    data = folder / "test_data_set_0"
    data.mkdir()
    inputs, outputs = case.data_sets[0]  # type: ignore[attr-defined]
    for kind, infos, values in (
        ("input", model.graph.input, inputs),
        ("output", model.graph.output, outputs),
    ):
        for j, (info, value) in enumerate(zip(infos, values)):
            if _is_tensor(info):
                tensor = numpy_helper.from_array(np.asarray(value), info.name)
                (data / f"{kind}_{j}.pb").write_bytes(tensor.SerializeToString())


@pytest.fixture(scope="module")
def node_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx_node")
    for name, case in CASES.items():
        _write_case(case, root / name)
    return root


def _read_tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _prepare(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Binds inputs 1.. as initializers and keeps output 0; returns (file, x, expected)."""
    model = onnx.load(os.fspath(folder / "model.onnx"))
    graph = model.graph
    if not graph.input:
        raise OnnxImportError("the graph has no runtime input")
    if not all(_is_tensor(info) for info in [*graph.input, *graph.output]):
        raise OnnxImportError(f"{_NON_TENSOR} or output (sequence or optional)")
    data = folder / "test_data_set_0"
    inputs = [_read_tensor(data / f"input_{j}.pb") for j in range(len(graph.input))]
    expected = _read_tensor(data / "output_0.pb")
    if inputs[0].dtype != np.float32:
        raise OnnxImportError(f"{_DTYPE} {inputs[0].dtype}: gometal runs float32 only")
    for info, value in list(zip(graph.input, inputs))[1:]:
        graph.initializer.append(numpy_helper.from_array(value, info.name))
    del graph.output[1:]
    path = folder / "bound.onnx"
    onnx.save(model, os.fspath(path))
    return path, inputs[0], expected


def _run(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    path, x, expected = _prepare(folder)
    # A node case's dimension 0 is an ordinary axis, not a batch: keep its size fixed.
    model = load(path, dynamic_batch=False)
    return model.predict(x, batch_size=len(x)), expected


def test_expected_unsupported_names_exist() -> None:
    stale = sorted(set(EXPECTED_UNSUPPORTED) - set(CASES))
    assert not stale, f"EXPECTED_UNSUPPORTED names cases onnx no longer has: {stale}"
    # The list of cases gometal does not support, with reasons, in the warnings summary.
    lines = [f"{name}: {reason}" for name, reason in sorted(EXPECTED_UNSUPPORTED.items())]
    warnings.warn(
        f"{len(lines)} ONNX node cases are not supported:\n" + "\n".join(lines), stacklevel=1
    )


def test_most_cases_are_supported() -> None:
    supported = len(CASES) - len(EXPECTED_UNSUPPORTED)
    assert supported >= 150, f"only {supported} of {len(CASES)} node cases are supported"


@pytest.mark.parametrize("name", sorted(set(CASES) - set(EXPECTED_UNSUPPORTED)))
def test_node_case(name: str, node_data: Path) -> None:
    case = CASES[name]
    actual, expected = _run(node_data / name)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=case.rtol, atol=case.atol)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(EXPECTED_UNSUPPORTED))
def test_unsupported_node_case_is_refused_with_its_reason(name: str, node_data: Path) -> None:
    with pytest.raises(OnnxImportError) as info:
        _run(node_data / name)
    assert EXPECTED_UNSUPPORTED[name] in str(info.value), str(info.value)
