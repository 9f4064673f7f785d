"""``ModelBuilder``: chainable sugar over the functional API for sequential models."""

from __future__ import annotations

from typing import Any

from . import layers
from .builder_spatial import SpatialBuilderMethods
from .graph_checks import next_auto_name
from .layers.base import Layer
from .model import Model
from .tensor import Input


class ModelBuilder(SpatialBuilderMethods):
    """Builds a sequential model one layer at a time.

    Each method applies a layer to the current output immediately, so a shape error is
    raised by the call that causes it, naming the layer it will be called in the model.

    Args:
        input_shape: the shape of one sample, without the batch dimension.

    Example:
        >>> model = (gm.ModelBuilder((64,))
        ...          .dense(128).relu().dropout(0.2)
        ...          .dense(10)
        ...          .build(seed=0))
        >>> cnn = (gm.ModelBuilder((3, 32, 32))
        ...        .conv2d(16, 3, padding=1).batch_norm().relu().max_pool2d(2)
        ...        .flatten().dense(10)
        ...        .build(seed=0))
    """

    def __init__(self, input_shape: Any):
        self._input = Input(input_shape)
        self._output = self._input
        self._taken_names: set[str] = set()
        self._name_counters: dict[str, int] = {}
        self._layers: list[Layer] = []

    def add(self, layer: Layer) -> ModelBuilder:
        """Appends any single-input layer; the chaining methods below call this.

        Args:
            layer: a layer instance that has not been used elsewhere.

        Returns:
            The builder, for chaining.

        Example:
            >>> builder.add(gm.layers.Dense(10))  # doctest: +SKIP
        """
        taken, counters = set(self._taken_names), dict(self._name_counters)
        if layer.name is not None:
            if layer.name in taken:
                raise ValueError(
                    f"duplicate layer name {layer.name!r}: layer names must be unique in a model"
                )
            taken.add(layer.name)
            label = layer.name
        else:
            # The model assigns the same name at build time, so errors can use it now.
            label = next_auto_name(layer.kind, taken, counters)
        if layer.num_outputs > 1:
            raise ValueError(
                f"layer '{label}' ({type(layer).__name__}) gives {layer.num_outputs} outputs "
                "(return_state=True); a ModelBuilder chains one output into the next layer: "
                "build this model with the functional API (gm.Model(inputs, outputs))"
            )
        self._output = layer.apply(self._output, label)
        self._taken_names, self._name_counters = taken, counters
        self._layers.append(layer)
        return self

    def dense(
        self, units: int, use_bias: bool = True, name: str | None = None, **options: Any
    ) -> ModelBuilder:
        """Appends a fully connected layer over the last axis (``gm.layers.Dense``).

        Args:
            units: output features.
            use_bias: whether to add a bias.
            name: an explicit layer name (default ``dense_<i>``).
            **options: ``activation``, ``kernel_initializer``, ``bias_initializer``,
                ``kernel_regularizer``, ``bias_regularizer`` (see ``gm.layers.Dense``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((8,)).dense(4, activation="relu")  # doctest: +SKIP
        """
        return self.add(layers.Dense(units, use_bias=use_bias, name=name, **options))

    def relu(self, name: str | None = None) -> ModelBuilder:
        """Appends ``max(x, 0)``."""
        return self.add(layers.ReLU(name=name))

    def leaky_relu(self, negative_slope: float = 0.01, name: str | None = None) -> ModelBuilder:
        """Appends a leaky ReLU.

        Args:
            negative_slope: the slope for negative inputs.
            name: an explicit layer name.

        Returns:
            The builder, for chaining.
        """
        return self.add(layers.LeakyReLU(negative_slope, name=name))

    def elu(self, alpha: float = 1.0, name: str | None = None) -> ModelBuilder:
        """Appends an ELU.

        Args:
            alpha: the saturation value for negative inputs.
            name: an explicit layer name.

        Returns:
            The builder, for chaining.
        """
        return self.add(layers.ELU(alpha, name=name))

    def sigmoid(self, name: str | None = None) -> ModelBuilder:
        """Appends the logistic sigmoid."""
        return self.add(layers.Sigmoid(name=name))

    def tanh(self, name: str | None = None) -> ModelBuilder:
        """Appends the hyperbolic tangent."""
        return self.add(layers.Tanh(name=name))

    def swish(self, name: str | None = None) -> ModelBuilder:
        """Appends ``x * sigmoid(x)``."""
        return self.add(layers.Swish(name=name))

    def gelu(self, name: str | None = None) -> ModelBuilder:
        """Appends the exact (erf) GELU."""
        return self.add(layers.GELU(name=name))

    def softmax(self, axis: int = -1, name: str | None = None) -> ModelBuilder:
        """Appends a softmax.

        Args:
            axis: the axis to normalize over (not the batch axis).
            name: an explicit layer name.

        Returns:
            The builder, for chaining.
        """
        return self.add(layers.Softmax(axis, name=name))

    def dropout(self, rate: float, name: str | None = None) -> ModelBuilder:
        """Appends dropout (active only in the training step).

        Args:
            rate: the drop probability, in ``[0, 1)``.
            name: an explicit layer name.

        Returns:
            The builder, for chaining.
        """
        return self.add(layers.Dropout(rate, name=name))

    def flatten(
        self, start_dim: int = 1, end_dim: int = -1, name: str | None = None
    ) -> ModelBuilder:
        """Appends a merge of axes ``start_dim`` to ``end_dim`` (``gm.layers.Flatten``; by
        default a reshape to ``(batch, features)``)."""
        return self.add(layers.Flatten(start_dim, end_dim, name=name))

    def reshape(self, target_shape: tuple[int, ...], name: str | None = None) -> ModelBuilder:
        """Appends a reshape of each sample to ``target_shape`` (``gm.layers.Reshape``)."""
        return self.add(layers.Reshape(target_shape, name=name))

    def permute(self, dims: tuple[int, ...], name: str | None = None) -> ModelBuilder:
        """Appends a permutation of the sample axes, numbered from 1 (``gm.layers.Permute``)."""
        return self.add(layers.Permute(dims, name=name))

    def lambda_layer(self, function: Any, name: str | None = None) -> ModelBuilder:
        """Appends ``gm.layers.Lambda(function)``: a function of ``gm.ops`` on the output.

        Args:
            function: a function of one tensor, or a registered function's name.
            name: an explicit layer name (default ``lambda_<i>``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((4,)).lambda_layer(gm.ops.square)  # doctest: +SKIP
        """
        return self.add(layers.Lambda(function, name=name))

    def layer_norm(
        self,
        normalized_shape: int | tuple[int, ...] | None = None,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        name: str | None = None,
    ) -> ModelBuilder:
        """Appends ``gm.layers.LayerNorm`` (``None``: over the last axis, whatever its size)."""
        if normalized_shape is None:
            normalized_shape = self._output.engine_shape[-1]
        return self.add(
            layers.LayerNorm(
                normalized_shape, eps, elementwise_affine=elementwise_affine, name=name
            )
        )

    def group_norm(
        self, num_groups: int, eps: float = 1e-5, affine: bool = True, name: str | None = None
    ) -> ModelBuilder:
        """Appends ``gm.layers.GroupNorm`` over the current output's channels (axis 1)."""
        channels = self._output.engine_shape[1] if self._output.ndim > 1 else 0
        return self.add(layers.GroupNorm(num_groups, channels, eps, affine=affine, name=name))

    def instance_norm2d(
        self, eps: float = 1e-5, affine: bool = False, name: str | None = None
    ) -> ModelBuilder:
        """Appends ``gm.layers.InstanceNorm2D`` over the current output's channels."""
        channels = self._output.engine_shape[1] if self._output.ndim > 1 else 0
        return self.add(layers.InstanceNorm2D(channels, eps, affine=affine, name=name))

    def prelu(
        self, num_parameters: int = 1, init: float = 0.25, name: str | None = None
    ) -> ModelBuilder:
        """Appends ``gm.layers.PReLU`` (one slope, or one per channel)."""
        return self.add(layers.PReLU(num_parameters, init, name=name))

    def silu(self, name: str | None = None) -> ModelBuilder:
        """Appends ``x * sigmoid(x)`` (``gm.layers.SiLU``, the same layer as ``swish``)."""
        return self.add(layers.SiLU(name=name))

    def hardswish(self, name: str | None = None) -> ModelBuilder:
        """Appends ``x * relu6(x + 3) / 6`` (``gm.layers.Hardswish``)."""
        return self.add(layers.Hardswish(name=name))

    def mish(self, name: str | None = None) -> ModelBuilder:
        """Appends ``x * tanh(softplus(x))`` (``gm.layers.Mish``)."""
        return self.add(layers.Mish(name=name))

    def conv2d(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | str | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        name: str | None = None,
        **options: Any,
    ) -> ModelBuilder:
        """Appends a 2-D convolution over ``(batch, C, H, W)`` (``gm.layers.Conv2D``).

        Args:
            out_channels: output channels.
            kernel_size: ``k`` or ``(kh, kw)``.
            stride: ``s`` or ``(sh, sw)``.
            padding: ``p``, ``(ph, pw)``, ``"valid"`` or ``"same"`` (stride 1 only).
            dilation: ``d`` or ``(dh, dw)``.
            groups: channel groups; must divide the input and output channels.
            use_bias: whether to add a per-channel bias.
            name: an explicit layer name (default ``conv2d_<i>``).
            **options: ``activation``, ``kernel_initializer``, ``bias_initializer``,
                ``kernel_regularizer``, ``bias_regularizer`` (see ``gm.layers.Conv2D``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((3, 32, 32)).conv2d(16, 3, padding=1)  # doctest: +SKIP
        """
        return self.add(
            layers.Conv2D(
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                use_bias=use_bias,
                name=name,
                **options,
            )
        )

    def max_pool2d(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        name: str | None = None,
    ) -> ModelBuilder:
        """Appends a max pooling (``gm.layers.MaxPool2D``).

        Args:
            kernel_size: ``k`` or ``(kh, kw)``.
            stride: ``s`` or ``(sh, sw)``; ``None`` uses ``kernel_size``.
            padding: ``p`` or ``(ph, pw)``, at most half the kernel.
            name: an explicit layer name (default ``max_pool2d_<i>``).

        Returns:
            The builder, for chaining.
        """
        return self.add(layers.MaxPool2D(kernel_size, stride=stride, padding=padding, name=name))

    def avg_pool2d(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        name: str | None = None,
    ) -> ModelBuilder:
        """Appends an average pooling (``gm.layers.AvgPool2D``; zero padding counts in the
        mean). The arguments are those of ``max_pool2d``; the default name is
        ``avg_pool2d_<i>``."""
        return self.add(layers.AvgPool2D(kernel_size, stride=stride, padding=padding, name=name))

    def global_avg_pool2d(self, name: str | None = None) -> ModelBuilder:
        """Appends the mean over height and width, ``(batch, C, H, W) -> (batch, C)``."""
        return self.add(layers.GlobalAvgPool2D(name=name))

    def batch_norm(
        self,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        name: str | None = None,
        sync: bool = False,
    ) -> ModelBuilder:
        """Appends batch normalization (``gm.layers.BatchNorm``): per channel after a
        convolution, per feature after a dense layer.

        Args:
            eps: added to the variance (> 0).
            momentum: the weight of each batch in the running statistics, in ``[0, 1]``.
            affine: whether to learn a per-channel scale and shift.
            name: an explicit layer name (default ``batch_norm_<i>``).
            sync: in data-parallel training, combine the batch statistics over the job's
                ranks (torch's ``SyncBatchNorm``) rather than use each rank's own.

        Returns:
            The builder, for chaining.

        Example:
            >>> builder = gm.ModelBuilder((3, 8, 8)).conv2d(4, 3).batch_norm(sync=True)
        """
        return self.add(
            layers.BatchNorm(eps=eps, momentum=momentum, affine=affine, name=name, sync=sync)
        )

    def build(self, seed: int = 0) -> Model:
        """Creates the model and initializes its weights.

        The first build uses the layers as added; each later build gets fresh layers of the
        same configuration, so every ``build(seed)`` is an independent model (building on
        shared layers is the functional API's job: ``gm.Model(...)``).

        Args:
            seed: seed for weight initialization.

        Returns:
            The model.

        Example:
            >>> model = gm.ModelBuilder((4,)).dense(1).build(seed=0)
        """
        if not any(layer.weight_store.initialized for layer in self._layers):
            return Model(self._input, self._output, seed=seed)
        x = Input(self._input.sample_shape)
        output = x
        for layer in self._layers:
            output = type(layer).from_config(layer.get_config())(output)
        return Model(x, output, seed=seed)
