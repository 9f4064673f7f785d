"""``gm.onnx.load`` of gometal's own export of a ``PositionalEmbedding`` at a run-time
sequence length (a ``Slice`` of the table whose end comes from ``Shape``): the import runs at
any length like the original, and its learned table fine-tunes like the original's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gometal as gm
from gometal import layers as L
from gometal.io.onnx import OnnxImportError, load

WIDTH, VOCAB, MAX_LENGTH = 8, 13, 12


def _model(kind: str) -> gm.Model:
    ids = gm.Input((None,), dtype="int32", name="ids")
    h = L.PositionalEmbedding(MAX_LENGTH, WIDTH, kind=kind)(L.Embedding(VOCAB, WIDTH)(ids))
    model = gm.Model(ids, L.Dense(3)(h), seed=3)
    rng = np.random.default_rng(4)
    model.set_weights({k: rng.standard_normal(s).astype(np.float32) * 0.5
                       for k, s in model.weight_shapes.items()})  # fmt: skip
    return model


def _ids(batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(length).integers(0, VOCAB, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_run_time_length_round_trip(kind: str, tmp_path: Path) -> None:
    model = _model(kind)
    model.export_onnx(tmp_path / "m.onnx")
    imported = load(tmp_path / "m.onnx")
    positions = [layer for layer in imported.layers if isinstance(layer, L.PositionalEmbedding)]
    assert [(p.max_length, p.encoding) for p in positions] == [(MAX_LENGTH, kind)]
    for batch, length in ((2, 1), (3, 7), (1, MAX_LENGTH)):
        ids = _ids(batch, length)
        np.testing.assert_allclose(imported.predict(ids), model.predict(ids), rtol=1e-5, atol=1e-6)
    # Beyond the table, both refuse with the layer's own error.
    with pytest.raises(Exception, match="max_length 12"):
        imported.predict(_ids(1, MAX_LENGTH + 1))


def test_the_learned_table_fine_tunes_as_the_original(tmp_path: Path) -> None:
    model = _model("learned")
    model.export_onnx(tmp_path / "m.onnx")
    imported = load(tmp_path / "m.onnx")
    trainable = sum(
        int(np.prod(imported.weight_shapes[n])) for n in imported.trainable_weight_names
    )
    assert trainable == model.count_params()
    ids = _ids(4, 6)
    y = np.random.default_rng(9).standard_normal((4, 6, 3)).astype(np.float32)
    ours = gm.Trainer(imported, loss="mse", optimizer=gm.optim.Adam(lr=1e-2))
    theirs = gm.Trainer(model, loss="mse", optimizer=gm.optim.Adam(lr=1e-2))
    for _ in range(3):
        np.testing.assert_allclose(
            ours.train_batch(ids, y).loss, theirs.train_batch(ids, y).loss, rtol=1e-5
        )


def test_a_table_cut_at_the_batch_size_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((MAX_LENGTH, WIDTH), np.float32), "table")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["n"]),
        helper.make_node("Slice", ["table", "zero", "n", "zero"], ["rows"], name="cut"),
        helper.make_node("Add", ["x", "rows"], ["y"]),
    ]
    ints = [
        numpy_helper.from_array(np.array([v], np.int64), k) for k, v in (("zero", 0), ("one", 1))
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [table, *ints],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "m.onnx"))  # fmt: skip
    with pytest.raises(OnnxImportError, match=r"Slice node 'cut'.*cut at batch"):
        load(tmp_path / "m.onnx")
