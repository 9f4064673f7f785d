"""``ModelBuilder``'s chaining methods for the spatial layers beyond ``Conv2D`` and pooling:
``conv1d``, ``conv2d_transpose``, ``upsampling2d``, ``zero_padding2d``,
``global_max_pool2d`` and ``adaptive_avg_pool2d``."""

from __future__ import annotations

from typing import Any, TypeVar

from typing_extensions import Self

from . import layers
from .layers.base import Layer

Builder = TypeVar("Builder", bound="SpatialBuilderMethods")


class SpatialBuilderMethods:
    """Mixed into ``ModelBuilder``: each method appends one layer through ``add``."""

    def add(self, layer: Layer) -> Self:  # provided by ModelBuilder
        raise NotImplementedError

    def conv1d(
        self,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        dilation: int = 1,
        groups: int = 1,
        use_bias: bool = True,
        name: str | None = None,
        **options: Any,
    ) -> Self:
        """Appends a 1-D convolution over ``(batch, C, L)`` (``gm.layers.Conv1D``).

        Args:
            out_channels: output channels.
            kernel_size: the kernel's length.
            stride: the step between windows.
            padding: an int, ``"valid"`` or ``"same"`` (stride 1).
            dilation: spacing between kernel taps.
            groups: channel groups; must divide the input and output channels.
            use_bias: whether to add a per-channel bias.
            name: an explicit layer name (default ``conv1d_<i>``).
            **options: ``activation``, ``kernel_initializer``, ``bias_initializer``,
                ``kernel_regularizer``, ``bias_regularizer`` (see ``gm.layers.Conv1D``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((4, 100)).conv1d(8, 3, padding="same")  # doctest: +SKIP
        """
        return self.add(
            layers.Conv1D(
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                groups,
                use_bias,
                name=name,
                **options,
            )
        )

    def conv2d_transpose(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        name: str | None = None,
        **options: Any,
    ) -> Self:
        """Appends a transposed 2-D convolution (``gm.layers.Conv2DTranspose``, torch's
        ``nn.ConvTranspose2d``).

        Args:
            out_channels: output channels.
            kernel_size: ``k`` or ``(kh, kw)``.
            stride: ``s`` or ``(sh, sw)``.
            padding: ``p`` or ``(ph, pw)``, removed from each side of the full output.
            output_padding: extra rows and columns at the bottom and right (< stride).
            dilation: ``d`` or ``(dh, dw)``.
            groups: channel groups; must divide the input and output channels.
            use_bias: whether to add a per-channel bias.
            name: an explicit layer name (default ``conv2d_transpose_<i>``).
            **options: ``activation``, ``kernel_initializer``, ``bias_initializer``,
                ``kernel_regularizer``, ``bias_regularizer`` (see
                ``gm.layers.Conv2DTranspose``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((16, 8, 8)).conv2d_transpose(8, 2, stride=2)  # doctest: +SKIP
        """
        return self.add(
            layers.Conv2DTranspose(
                out_channels,
                kernel_size,
                stride,
                padding,
                output_padding,
                dilation,
                groups,
                use_bias,
                name=name,
                **options,
            )
        )

    def upsampling2d(
        self,
        scale_factor: float | tuple[float, float] = 2,
        mode: str = "nearest",
        align_corners: bool = False,
        name: str | None = None,
    ) -> Self:
        """Appends a resize by ``scale_factor`` (``gm.layers.UpSampling2D``, ``nn.Upsample``).

        Args:
            scale_factor: ``s`` or ``(sh, sw)``.
            mode: ``"nearest"`` or ``"bilinear"``.
            align_corners: torch's meaning, for ``"bilinear"``.
            name: an explicit layer name (default ``upsampling2d_<i>``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((3, 8, 8)).upsampling2d(2, mode="bilinear")  # doctest: +SKIP
        """
        return self.add(layers.UpSampling2D(scale_factor, mode, align_corners, name=name))

    def zero_padding2d(self, padding: Any = 1, name: str | None = None) -> Self:
        """Appends zero padding around images (``gm.layers.ZeroPadding2D``).

        Args:
            padding: ``p``, ``(ph, pw)`` or ``((top, bottom), (left, right))``.
            name: an explicit layer name (default ``zero_padding2d_<i>``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((3, 8, 8)).zero_padding2d(((1, 0), (1, 0)))  # doctest: +SKIP
        """
        return self.add(layers.ZeroPadding2D(padding, name=name))

    def global_max_pool2d(self, name: str | None = None) -> Self:
        """Appends the maximum over height and width, ``(batch, C)`` out
        (``gm.layers.GlobalMaxPool2D``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((16, 8, 8)).global_max_pool2d()  # doctest: +SKIP
        """
        return self.add(layers.GlobalMaxPool2D(name=name))

    def adaptive_avg_pool2d(
        self, output_size: int | tuple[int, int], name: str | None = None
    ) -> Self:
        """Appends an average pool to a fixed ``(OH, OW)`` (``gm.layers.AdaptiveAvgPool2D``,
        torch's bins).

        Args:
            output_size: ``s`` or ``(OH, OW)``.
            name: an explicit layer name (default ``adaptive_avg_pool2d_<i>``).

        Returns:
            The builder, for chaining.

        Example:
            >>> gm.ModelBuilder((16, 7, 7)).adaptive_avg_pool2d(3)  # doctest: +SKIP
        """
        return self.add(layers.AdaptiveAvgPool2D(output_size, name=name))
