"""The ONNX node cases of ConvTranspose, Resize, Upsample, Pad and GlobalMaxPool that
gometal refuses, with the reason: what its layers (Conv2DTranspose, UpSampling2D with
torch's modes, ZeroPadding2D) cannot compute exactly."""

from __future__ import annotations

_NOT_TORCH = "samples other pixels than torch's"
_CUBIC = "mode 'cubic' is not supported"
_ANTIALIAS = "antialias=1 is not supported"
_CROP = "'tf_crop_and_resize' is not supported"

SPATIAL_UNSUPPORTED = {
    "test_convtranspose_1d": "only 2-D transposed convolution",
    "test_convtranspose_3d": "only 2-D transposed convolution",
    # SAME_UPPER crops the end only, which an output padding cannot express.
    "test_convtranspose_autopad_same": "end crop that Conv2DTranspose cannot express",
    **{f"test_{kind}_pad": "input dtype" for kind in ("edge", "reflect", "wrap")},
    **{f"test_constant_pad{suffix}": "only zero padding" for suffix in (
        "", "_axes", "_negative_axes",
    )},
    **{f"test_resize_{case}": _CUBIC for case in (
        "downsample_scales_cubic", "downsample_scales_cubic_align_corners",
        "downsample_sizes_cubic", "upsample_scales_cubic", "upsample_scales_cubic_align_corners",
        "upsample_scales_cubic_asymmetric", "upsample_sizes_cubic",
    )},
    **{f"test_resize_{case}": "exclude_outside=1 is not supported" for case in (
        "downsample_scales_cubic_A_n0p5_exclude_outside",
        "upsample_scales_cubic_A_n0p5_exclude_outside",
    )},
    **{f"test_resize_{case}": _ANTIALIAS for case in (
        "downsample_scales_cubic_antialias", "downsample_scales_linear_antialias",
        "downsample_sizes_cubic_antialias", "downsample_sizes_linear_antialias",
    )},
    **{f"test_resize_{case}": "'half_pixel_symmetric' is not supported" for case in (
        "downsample_scales_linear_half_pixel_symmetric",
        "upsample_scales_linear_half_pixel_symmetric",
    )},
    **{f"test_resize_{case}": _CROP for case in (
        "tf_crop_and_resize", "tf_crop_and_resize_axes_2_3", "tf_crop_and_resize_axes_3_2",
        "tf_crop_and_resize_extrapolation_value",
    )},
    **{f"test_resize_{case}": "keep_aspect_ratio_policy" for case in (
        "downsample_sizes_nearest_not_larger", "downsample_sizes_nearest_not_smaller",
        "upsample_sizes_nearest_not_larger", "upsample_sizes_nearest_not_smaller",
    )},
    # Index maps that differ from torch's nearest or bilinear for the case's sizes.
    **{f"test_resize_{case}": _NOT_TORCH for case in (
        "downsample_scales_linear_align_corners",  # ONNX divides by 4 * 0.6 - 1, torch by 1
        "downsample_scales_nearest", "downsample_sizes_nearest",
        "downsample_sizes_linear_pytorch_half_pixel",
        "upsample_sizes_nearest_ceil_half_pixel", "upsample_sizes_nearest_floor_align_corners",
        "upsample_sizes_nearest_round_prefer_ceil_asymmetric",
    )},
}  # fmt: skip
