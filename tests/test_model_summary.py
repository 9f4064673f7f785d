"""``Model.summary`` prints its table and returns None, as Keras' does, and counts trainable
and non-trainable values as torch splits parameters and buffers."""

import numpy as np
import pytest
import torch

import gometal as gm


def test_summary_prints_the_table_and_returns_none(capsys):
    model = gm.ModelBuilder((6,)).dense(4).relu().dense(2).build(seed=0)
    assert model.summary() is None
    printed = capsys.readouterr().out
    assert "dense_0 (Dense)" in printed and "dense_1 (Dense)" in printed
    assert "Trainable params: 38" in printed  # 6*4 + 4 + 4*2 + 2

    lines: list[str] = []
    assert model.summary(print_fn=lines.append) is None
    assert capsys.readouterr().out == ""
    assert "\n".join(lines) + "\n" == printed


def test_summary_counts_batch_norm_buffers_as_non_trainable(capsys):
    model = gm.ModelBuilder((3, 8, 8)).conv2d(5, 3).batch_norm().flatten().dense(2).build()
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3),
        torch.nn.BatchNorm2d(5),
        torch.nn.Flatten(),
        torch.nn.Linear(5 * 6 * 6, 2),
    )
    trainable = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() for name, b in net.named_buffers() if "running" in name)
    model.summary()
    printed = capsys.readouterr().out
    assert f"Trainable params: {trainable:,}" in printed
    assert f"Non-trainable params: {buffers:,}" in printed
    assert f"Total params: {trainable + buffers:,}" in printed


class _WithConstant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.register_buffer("offset", torch.arange(3, dtype=torch.float32))

    def forward(self, x):
        return self.fc(x) + self.offset


def test_an_imported_models_constants_are_not_called_running_statistics(tmp_path, capsys):
    net = _WithConstant().eval()
    path = tmp_path / "constant.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(2, 4),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    model = gm.onnx.load(path)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(
        model.predict(x), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    model.summary()
    printed = capsys.readouterr().out
    assert "running statistics" not in printed
    assert "Non-trainable params: 3" in printed
    assert f"Trainable params: {sum(p.numel() for p in net.parameters())}" in printed


def test_summary_print_fn_must_be_callable():
    model = gm.ModelBuilder((6,)).dense(2).build(seed=0)
    with pytest.raises(TypeError, match="print_fn must be callable .* got str"):
        model.summary(print_fn="lines")


def test_a_run_time_sequence_length_shows_as_seq(capsys):
    # Keras prints None for such a dim; the engine's symbol is negative and must not leak out.
    ids = gm.Input((None,), dtype="int32")
    h = gm.layers.Embedding(65, 16)(ids)
    model = gm.Model(ids, gm.layers.Dense(65)(gm.layers.GRU(16, 8)(h)), seed=0)
    model.summary()
    out = capsys.readouterr().out
    assert "(batch, seq, 8)" in out and "(batch, seq, 65)" in out
    assert "-2" not in out
