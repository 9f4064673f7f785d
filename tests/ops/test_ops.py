"""Every op case on every backend this build runs, every error case, and the coverage test:
each op the engine lists has at least one case."""

from __future__ import annotations

import numpy as np
import pytest

from gometal import _core

from . import (
    cases_attention,
    cases_attention_kernel,
    cases_collective,
    cases_conv,
    cases_decoding,
    cases_dtypes,
    cases_effects,
    cases_elementwise,
    cases_errors,
    cases_layout,
    cases_positions,
    cases_quantized,
    cases_recurrent,
    cases_reduce,
    cases_symbols,
    cases_transformer,
)
from .harness import (
    ErrorCase,
    OpCase,
    ScenarioCase,
    available_backends,
    check_error_case,
    check_op_case,
    missing_ops,
    op_case_params,
)

OP_CASES: list[OpCase] = [
    *cases_elementwise.CASES,
    *cases_reduce.CASES,
    *cases_layout.CASES,
    *cases_conv.CASES,
    *cases_attention.CASES,
    *cases_transformer.CASES,
    *cases_recurrent.CASES,
    *cases_collective.CASES,
]
SCENARIOS: list[ScenarioCase] = [
    *cases_effects.SCENARIOS,
    *cases_errors.SCENARIOS,
    *cases_dtypes.SCENARIOS,
    *cases_symbols.SCENARIOS,
    *cases_attention_kernel.SCENARIOS,
    *cases_decoding.SCENARIOS,
    *cases_transformer.SCENARIOS,
    *cases_recurrent.SCENARIOS,
    *cases_positions.SCENARIOS,
    *cases_quantized.SCENARIOS,
    *cases_collective.SCENARIOS,
]
ERROR_CASES: list[ErrorCase] = [
    *cases_errors.CASES,
    *cases_attention.ERRORS,
    *cases_decoding.ERROR_CASES,
    *cases_transformer.ERROR_CASES,
    *cases_recurrent.ERROR_CASES,
    *cases_positions.ERROR_CASES,
    *cases_quantized.ERROR_CASES,
    *cases_collective.ERROR_CASES,
]
BACKENDS = available_backends()


@pytest.mark.parametrize("case, dtype, backend", op_case_params(OP_CASES, BACKENDS))
def test_op(case: OpCase, dtype: str, backend: str, rng: np.random.Generator) -> None:
    check_op_case(case, dtype, backend, rng)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SCENARIOS, ids=lambda case: case.id)
def test_scenario(case: ScenarioCase, backend: str, rng: np.random.Generator) -> None:
    case.check(backend, rng)


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case.id)
def test_error(case: ErrorCase) -> None:
    check_error_case(case)


def test_every_op_has_a_case() -> None:
    missing = missing_ops([*OP_CASES, *SCENARIOS], _core.op_names())
    assert not missing, f"ops with no case in tests/ops: {missing}"


def test_coverage_names_an_op_whose_cases_are_dropped() -> None:
    # The coverage test can fail: without pad's cases, pad is reported missing.
    without_pad = [case for case in [*OP_CASES, *SCENARIOS] if case.op != "pad"]
    assert missing_ops(without_pad, _core.op_names()) == ["pad"]


def test_every_case_names_an_op_of_the_engine() -> None:
    known = set(_core.op_names())
    unknown = sorted({case.op for case in [*OP_CASES, *SCENARIOS]} - known)
    assert not unknown, f"cases for ops the engine does not have: {unknown}"


def test_case_ids_are_unique() -> None:
    for table in (OP_CASES, SCENARIOS, ERROR_CASES):
        ids = [case.id for case in table]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        assert not repeated, f"cases with the same id: {repeated}"
