"""Layer calls with several outputs: ``SimpleRNN/LSTM/GRU(..., return_state=True)`` gives
``(output, h_n)`` (LSTM: ``(output, h_n, c_n)``) from one call, and
``layer(x, initial_state=[h0, c0])`` feeds states in. Outputs, states and every gradient
against torch (float64); the model's definition, summary and files keep the outputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import gometal as gm
from gometal.io.serialization.model_config import model_from_config, model_to_config
from gometal.models.decoding import decoder_for
from gometal.models.recurrent_decoding import is_recurrent_language_model
from layer_outputs_support import as_float32, assert_close, model_gradients

INPUT, HIDDEN, BATCH, STEPS = 5, 6, 4, 7

CASES = [
    ("lstm", 1, False, "sequence"),
    ("lstm", 2, True, "sequence"),
    ("gru", 2, False, "last"),
    ("gru", 1, True, "sequence"),
    ("rnn_tanh", 2, True, "last"),
    ("rnn_relu", 1, False, "sequence"),
]


def _torch_module(cell: str, layers: int, bidirectional: bool) -> nn.Module:
    torch.manual_seed(0)
    options = {"num_layers": layers, "batch_first": True, "bidirectional": bidirectional}
    if cell == "lstm":
        return nn.LSTM(INPUT, HIDDEN, **options).double()
    if cell == "gru":
        return nn.GRU(INPUT, HIDDEN, **options).double()
    return nn.RNN(INPUT, HIDDEN, nonlinearity=cell[4:], **options).double()


def _layer(cell: str, layers: int, bidirectional: bool, **options) -> gm.layers.Layer:
    common = {"num_layers": layers, "bidirectional": bidirectional, **options}
    if cell == "lstm":
        return gm.layers.LSTM(INPUT, HIDDEN, **common)
    if cell == "gru":
        return gm.layers.GRU(INPUT, HIDDEN, **common)
    return gm.layers.SimpleRNN(INPUT, HIDDEN, nonlinearity=cell[4:], **common)


def _draw(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("cell,layers,bidirectional,output", CASES)
@pytest.mark.parametrize("with_states", [False, True])
def test_return_state_gives_torchs_output_states_and_gradients(
    cell, layers, bidirectional, output, with_states
) -> None:
    module = _torch_module(cell, layers, bidirectional)
    rows, lstm = (2 if bidirectional else 1) * layers, cell == "lstm"
    x = gm.Input((None, INPUT))
    states = [gm.Input((rows, HIDDEN)) for _ in range(2 if lstm else 1)] if with_states else []
    layer = _layer(cell, layers, bidirectional, output=output, return_state=True)
    results = layer(x, initial_state=states) if with_states else layer(x)
    assert isinstance(results, tuple) and len(results) == (3 if lstm else 2)
    model = gm.Model([x, *states], list(results))
    layer.set_weights(as_float32(module))

    arrays = _draw([(BATCH, STEPS, INPUT)] + [(BATCH, rows, HIDDEN)] * len(states), 1)
    # The sequence's length is symbolic (-> STEPS); the states' shapes are known.
    upstreams = _draw(
        [(BATCH, *(STEPS if d < 0 else d for d in t.sample_shape)) for t in results], 2
    )
    outs, input_grads, weight_grads = model_gradients(model, arrays, upstreams)

    # torch: time-major states (rows, N, H); gometal's are batch-first, its transpose.
    tx = torch.tensor(arrays[0], dtype=torch.float64, requires_grad=True)
    t_states = [
        torch.tensor(a, dtype=torch.float64).transpose(0, 1).contiguous().requires_grad_(True)
        for a in arrays[1:]
    ]
    initial = None if not t_states else (tuple(t_states) if lstm else t_states[0])
    sequence, final = module(tx, initial)
    finals = list(final) if lstm else [final]
    directions = 2 if bidirectional else 1
    if output == "last":
        sequence = torch.cat(list(finals[0][-directions:]), dim=1)
    expected = [sequence, *(f.transpose(0, 1) for f in finals)]
    loss = sum(
        (e * torch.tensor(u, dtype=torch.float64)).sum() for e, u in zip(expected, upstreams)
    )
    loss.backward()

    for index, (got, want) in enumerate(zip(outs, expected)):
        assert_close(got, want.detach().numpy(), f"output {index}")
    assert_close(input_grads[0], tx.grad.numpy(), "gradient of x")
    for index, state in enumerate(t_states):
        assert_close(input_grads[1 + index], state.grad.transpose(0, 1).numpy(), "state grad")
    for name, parameter in module.named_parameters():
        assert_close(weight_grads[f"{layer.name}.{name}"], parameter.grad.numpy(), name)


def test_initial_state_keyword_is_the_inputs_list() -> None:
    x, h, c = gm.Input((None, INPUT)), gm.Input((1, HIDDEN)), gm.Input((1, HIDDEN))
    by_keyword = gm.layers.LSTM(INPUT, HIDDEN)
    listed = gm.layers.LSTM(INPUT, HIDDEN, initial_state=True)
    one = gm.Model([x, h, c], by_keyword(x, initial_state=[h, c]))
    two = gm.Model([x, h, c], listed([x, h, c]))
    assert by_keyword.initial_state and by_keyword.get_config() == {
        **listed.get_config(),
        "name": by_keyword.name,
    }
    two.set_weights(
        {k.replace(by_keyword.name, listed.name): v for k, v in one.get_weights().items()}
    )
    arrays = _draw([(3, 4, INPUT), (3, 1, HIDDEN), (3, 1, HIDDEN)], 3)
    np.testing.assert_array_equal(one.predict(arrays), two.predict(arrays))


def test_lengths_follow_the_states_by_keyword() -> None:
    """lengths stay the last input: x, h0, then lengths; padded steps leave the state."""
    module = _torch_module("gru", 1, False)
    x, h0 = gm.Input((None, INPUT)), gm.Input((1, HIDDEN))
    lengths = gm.Input((1,), dtype="int32")
    layer = gm.layers.GRU(INPUT, HIDDEN, lengths=True, return_state=True)
    sequence, h_n = layer([x, lengths], initial_state=[h0])
    model = gm.Model([x, h0, lengths], [sequence, h_n])
    layer.set_weights(as_float32(module))
    xs, h0s = _draw([(3, 5, INPUT), (3, 1, HIDDEN)], 4)
    sizes = np.array([[5], [2], [4]], np.int32)
    got_sequence, got_h = model.predict([xs, h0s, sizes])
    for row, size in enumerate(sizes[:, 0]):
        t_x = torch.tensor(xs[row : row + 1, :size], dtype=torch.float64)
        t_h0 = torch.tensor(h0s[row : row + 1], dtype=torch.float64).transpose(0, 1)
        seq, h = module(t_x, t_h0.contiguous())
        assert_close(got_sequence[row, :size], seq[0].detach().numpy(), "sequence")
        assert_close(got_h[row], h.transpose(0, 1)[0].detach().numpy(), "h_n")
        assert not got_sequence[row, size:].any()


def _encoder_decoder() -> gm.Model:
    x = gm.Input((None, INPUT), name="x")
    _, h, c = gm.layers.LSTM(INPUT, HIDDEN, num_layers=2, return_state=True)(x)
    decoded = gm.layers.LSTM(INPUT, HIDDEN, num_layers=2)(x, initial_state=[h, c])
    return gm.Model(x, [gm.layers.Dense(2)(decoded), h, c], seed=3)


def test_definition_copies_and_files_keep_several_outputs(tmp_path) -> None:
    model = _encoder_decoder()
    arrays = _draw([(2, 5, INPUT)], 5)[0]
    expected = model.predict(arrays)
    config = model_to_config(model)
    assert [len(c["inputs"]) for c in config["calls"]] == [1, 3, 1]
    # The decoder reads tensors 2 and 3 (h_n and c_n of the encoder, tensor 1 its sequence).
    assert config["calls"][1]["inputs"] == [0, 2, 3]
    assert [o["tensor"] for o in config["outputs"]] == [5, 2, 3]
    rebuilt = model_from_config(config)
    rebuilt.set_weights(model.get_weights())
    assert rebuilt.output_names == model.output_names == ("dense_0", "lstm_0_h_n", "lstm_0_c_n")
    path = tmp_path / "seq2seq.gmz"
    model.save(path)
    for other in (rebuilt, copy.deepcopy(model), gm.load_model(path)):
        for got, want in zip(other.predict(arrays), expected):
            np.testing.assert_array_equal(got, want)


def test_summary_lists_every_output_shape() -> None:
    lines: list[str] = []
    _encoder_decoder().summary(print_fn=lines.append)
    row = next(line for line in lines if line.startswith("lstm_0 (LSTM)"))
    assert "(batch, seq, 6), (batch, 2, 6), (batch, 2, 6)" in row
    assert lines[-1] == "Outputs: dense_0, lstm_0_h_n, lstm_0_c_n"


def test_layer_output_and_graph_give_the_call_outputs() -> None:
    model = _encoder_decoder()
    outputs = model.layer_output("lstm_0")
    assert isinstance(outputs, tuple) and [t.output_index for t in outputs] == [0, 1, 2]
    call = model.graph.calls_of(model.get_layer("lstm_0"))[0]
    assert call.outputs == outputs and call.output is outputs[0]
    assert [t.producer for t in outputs] == [call] * 3


def test_loss_on_h_n_trains_as_torch() -> None:
    """One SGD step on the MSE of h_n alone: torch's updated weights."""
    module = _torch_module("gru", 2, True)
    x = gm.Input((None, INPUT))
    layer = gm.layers.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True, return_state=True)
    _, h_n = layer(x)
    model = gm.Model(x, h_n)
    layer.set_weights(as_float32(module))
    xs, target = _draw([(BATCH, STEPS, INPUT), (BATCH, 4, HIDDEN)], 6)
    trainer = gm.Trainer(model, loss="mse", optimizer=gm.optim.SGD(lr=0.5))
    loss = trainer.train_batch(xs, target).loss

    reference = torch.optim.SGD(module.parameters(), lr=0.5)
    _, final = module(torch.tensor(xs, dtype=torch.float64))
    t_loss = nn.functional.mse_loss(final.transpose(0, 1), torch.tensor(target).double())
    t_loss.backward()
    reference.step()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-5)
    weights = layer.get_weights()
    for name, parameter in module.named_parameters():
        assert_close(weights[name], parameter.detach().numpy(), name)


def test_wrong_number_of_initial_states_is_refused_by_name() -> None:
    x, h = gm.Input((None, INPUT)), gm.Input((1, HIDDEN))
    lstm = gm.layers.LSTM(INPUT, HIDDEN, name="decoder")
    with pytest.raises(ValueError, match=r"layer 'decoder' \(LSTM\) takes initial_state as "):
        lstm(x, initial_state=[h])
    assert not lstm.initial_state  # the failed call left the layer as it was
    with pytest.raises(ValueError, match=r"\[h0\] \(1 tensor\(s\).*got 2"):
        gm.layers.GRU(INPUT, HIDDEN)(x, initial_state=[h, h])
    with pytest.raises(TypeError, match="initial_state must be a list"):
        gm.layers.GRU(INPUT, HIDDEN)(x, initial_state="h0")


def test_wrong_state_shapes_are_refused_by_name() -> None:
    x = gm.Input((None, INPUT))
    lstm = gm.layers.LSTM(INPUT, HIDDEN, num_layers=2, name="decoder")
    wrong = gm.Input((1, HIDDEN))
    with pytest.raises(ValueError, match=r"'decoder'.*h0 of shape \(N, D\*num_layers=2, 6\).*"):
        lstm(x, initial_state=[wrong, gm.Input((2, HIDDEN))])
    with pytest.raises(ValueError, match=r"'decoder'.*c0 of shape .*got \(None, 2, 5\)"):
        lstm(x, initial_state=[gm.Input((2, HIDDEN)), gm.Input((2, 5))])
    assert not lstm.built and not lstm.initial_state


def test_states_are_refused_where_the_layer_takes_none() -> None:
    x, h = gm.Input((None, INPUT)), gm.Input((1, HIDDEN))
    built = gm.layers.GRU(INPUT, HIDDEN, name="enc")
    built(x)
    with pytest.raises(ValueError, match="'enc'.*built without initial states"):
        built(x, initial_state=[h])
    stateful = gm.layers.GRU(INPUT, HIDDEN, stateful=True, batch_size=2, name="carry")
    with pytest.raises(ValueError, match="'carry'.*is stateful"):
        stateful(x, initial_state=[h])
    with pytest.raises(ValueError, match="return_state=True .* got output='h_n'"):
        gm.layers.GRU(INPUT, HIDDEN, output="h_n", return_state=True)


def test_a_builder_refuses_a_layer_of_several_outputs() -> None:
    builder = gm.ModelBuilder((None, INPUT))
    with pytest.raises(ValueError, match="return_state.*functional API"):
        builder.add(gm.layers.LSTM(INPUT, HIDDEN, return_state=True))


def test_a_language_model_whose_layer_gives_states_is_not_decoded_token_by_token() -> None:
    tokens = gm.Input((None,), dtype="int32")
    sequence, _ = gm.layers.GRU(INPUT, HIDDEN, return_state=True)(
        gm.layers.Embedding(11, INPUT)(tokens)
    )
    model = gm.Model(tokens, gm.layers.Dense(11)(sequence))
    assert not is_recurrent_language_model(model)
    assert decoder_for(model, 1) is None
