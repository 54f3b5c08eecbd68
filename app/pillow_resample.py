"""Pillow's bilinear resize as two matrix products, bit for bit, so it can run inside TensorFlow.

The encoder decodes and resizes JPEG searches inside its model call
(app/jpeg_batch.py), and what it feeds the model must equal what
`images.to_model_input` gives, or a searched image would stop finding its own
indexed copy at 1.0. Pillow's bilinear filter is reproducible exactly: each
pass multiplies by fixed-point weights (22 fractional bits), adds half,
shifts and clips to 8 bits. Products and sums of those integers stay below
2**53, so float64 matrix products compute them exactly in any order.

Which pass runs first changes the result by one grey level in places, and
Pillow chooses the order by a rule of its own that is not part of its API.
So the order for each geometry is learnt from Pillow: a random probe image is
resized by Pillow and both ways here, and a geometry that neither order
reproduces has no plan (its uploads are decoded by Pillow, as before).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

PRECISION_BITS = 22
_HALF = float(1 << (PRECISION_BITS - 1))
_ONE = float(1 << PRECISION_BITS)


@dataclass(frozen=True, eq=False)
class ResizePlan:
    """Pillow's resize from one (W, H) to another, as fixed-point weight matrices."""

    horizontal: np.ndarray  # [out W, in W] float64 holding integers
    vertical: np.ndarray  # [out H, in H]
    vertical_first: bool


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point bilinear weights, one row per output pixel (its precompute_coeffs)."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    inverse = 1.0 / filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - first
        taps = np.maximum(0.0, 1.0 - np.abs((np.arange(count) + first - center + 0.5) * inverse))
        total = float(taps.sum())
        if total != 0.0:
            taps = taps / total
        weights[out, first : first + count] = np.floor(0.5 + taps * _ONE)
    return weights


def apply(plan: ResizePlan, pixels: np.ndarray) -> np.ndarray:
    """Resize uint8 [H, W, C] pixels by a plan with NumPy (the reference the graph follows)."""
    values = pixels.astype(np.float64)
    if plan.vertical_first:
        values = _round(np.einsum("hwc,ph->pwc", values, plan.vertical))
        values = _round(np.einsum("hwc,ow->hoc", values, plan.horizontal))
    else:
        values = _round(np.einsum("hwc,ow->hoc", values, plan.horizontal))
        values = _round(np.einsum("hwc,ph->pwc", values, plan.vertical))
    return values.astype(np.uint8)


def _round(sums: np.ndarray) -> np.ndarray:
    return np.clip(np.floor((sums + _HALF) / _ONE), 0, 255)


@functools.lru_cache(maxsize=512)
def resize_plan(in_size: tuple[int, int], out_size: tuple[int, int]) -> ResizePlan | None:
    """The plan that reproduces Pillow's `resize(out_size, BILINEAR)` from `in_size` (W, H).

    None when neither pass order matches Pillow, or when no probe tells the
    two orders apart (tiny outputs can agree by chance). Cached: a catalogue's
    uploads come in a handful of sizes.
    """
    (in_w, in_h), (out_w, out_h) = in_size, out_size
    horizontal_first = ResizePlan(
        bilinear_weights(in_w, out_w), bilinear_weights(in_h, out_h), False
    )
    vertical_first = ResizePlan(horizontal_first.horizontal, horizontal_first.vertical, True)
    one_pass = in_w == out_w or in_h == out_h  # an unchanged axis's pass is exact
    for seed in range(_PROBES):
        probe = np.random.default_rng([in_w, in_h, out_w, out_h, seed]).integers(
            0, 256, (in_h, in_w, 3), dtype=np.uint8
        )
        expected = np.asarray(Image.fromarray(probe).resize(out_size, Image.Resampling.BILINEAR))
        by_rows = apply(horizontal_first, probe)
        if one_pass:
            return horizontal_first if np.array_equal(by_rows, expected) else None
        by_columns = apply(vertical_first, probe)
        if np.array_equal(by_rows, by_columns):
            continue
        if np.array_equal(by_rows, expected):
            return horizontal_first
        if np.array_equal(by_columns, expected):
            return vertical_first
        return None
    return None


_PROBES = 8
