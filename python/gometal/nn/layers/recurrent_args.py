"""The constructor arguments ``SimpleRNN``, ``LSTM`` and ``GRU`` (``recurrent.py``) share,
documented once: each class's docstring is built from this text."""

COMMON_ARGS = """
    Args:
        input_size: the features of each step of ``x``.
        hidden_size: ``H``.
        num_layers: stacked layers, each reading the previous one's output sequence.
        bias: whether the layers have ``bias_ih`` and ``bias_hh``.
        batch_first: must be True: ``x`` is ``(N, T, input_size)``.
        dropout: dropout on each layer's output but the last, in training.
        bidirectional: also run every layer from the last step to the first
            (``_reverse`` weights); outputs concatenate both directions.
        output: ``"sequence"`` ``(N, T, D*H_out)``, zeros at padded steps; ``"last"``
            ``(N, D*H_out)``: the last layer's final states (the last valid step forward,
            the first step in reverse); ``"h_n"`` ``(N, D*num_layers, H_out)``; an LSTM
            also gives ``"c_n"`` ``(N, D*num_layers, H)``.
        initial_state: whether ``h0`` (and an LSTM's ``c0``), ``(N, D*num_layers, .)``,
            follow ``x`` as inputs; zeros otherwise.
        lengths: whether a last int32 ``(N,)`` or ``(N, 1)`` input (``gm.Input((1,),
            dtype="int32")``) holds each sequence's length, in
            ``[1, T]``: steps past it neither change the state nor get a gradient, as
            torch's packed sequences.
        key_padding_mask: the same as a last float ``(N, T)`` input holding 1 at padded
            steps, which end each row.
        stateful: keep each training batch's final states (the weights ``state_h`` and an
            LSTM's ``state_c``, not trained) as the next batch's initial states, detached:
            truncated backpropagation through time over consecutive batches, as a stateful
            text loader gives them; ``reset_states()`` zeroes them.
        batch_size: a stateful layer's batch size (one state row per sequence).
        return_state: a call gives ``(output, h_n)``, an LSTM's ``(output, h_n, c_n)``
            (states batch-first, ``(N, D*num_layers, .)``), from one recurrence per layer
            and direction; ``output`` is then ``"sequence"`` or ``"last"``.
        name: an explicit layer name.
"""
