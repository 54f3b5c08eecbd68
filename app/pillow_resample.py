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
So the order for each geometry is learnt from Pillow (`resize_plan`), and a
geometry it cannot settle has no plan (its uploads are decoded by Pillow).
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


@functools.lru_cache(maxsize=128)
def resize_plan(in_size: tuple[int, int], out_size: tuple[int, int]) -> ResizePlan | None:
    """The plan that reproduces Pillow's `resize(out_size, BILINEAR)` from `in_size` (W, H).

    Checked against Pillow on random probes of that size: each axis's weights
    on a strip (one pass alone is unambiguous), and the pass order by
    resizing the whole probe both ways round with Pillow itself, which keeps
    the check to a few milliseconds even for large decodes: it runs on the
    encoder's thread the first time a size is seen. None when the probes
    cannot tell the two orders apart (tiny outputs can agree by chance) or
    when nothing matches. Cached: a catalogue's uploads come in a handful of sizes.
    """
    (in_w, in_h), (out_w, out_h) = in_size, out_size
    horizontal = bilinear_weights(in_w, out_w)
    vertical = bilinear_weights(in_h, out_h)
    bilinear = Image.Resampling.BILINEAR
    for seed in range(_PROBES):
        rng = np.random.default_rng([in_w, in_h, out_w, out_h, seed])
        probe = Image.frombytes("RGB", in_size, rng.bytes(in_w * in_h * 3))
        by_rows = probe.resize((out_w, in_h), bilinear)
        by_columns = probe.resize((in_w, out_h), bilinear)
        strip = min(_STRIP, in_h, in_w)
        top = np.asarray(probe.crop((0, 0, in_w, strip)))
        left = np.asarray(probe.crop((0, 0, strip, in_h)))
        rows_ok = np.array_equal(np.asarray(by_rows)[:strip], _pass(top, horizontal, "hwc,ow->hoc"))
        columns_ok = np.array_equal(
            np.asarray(by_columns)[:, :strip], _pass(left, vertical, "hwc,ph->pwc")
        )
        if not (rows_ok and columns_ok):
            return None
        expected = np.asarray(probe.resize(out_size, bilinear))
        rows_first = np.asarray(by_rows.resize(out_size, bilinear))
        if in_w == out_w or in_h == out_h:  # one pass: the order cannot matter
            return (
                ResizePlan(horizontal, vertical, False)
                if np.array_equal(rows_first, expected)
                else None
            )
        columns_first = np.asarray(by_columns.resize(out_size, bilinear))
        if np.array_equal(rows_first, columns_first):
            continue
        if np.array_equal(rows_first, expected):
            return ResizePlan(horizontal, vertical, False)
        if np.array_equal(columns_first, expected):
            return ResizePlan(horizontal, vertical, True)
        return None
    return None


def _pass(pixels: np.ndarray, weights: np.ndarray, subscripts: str) -> np.ndarray:
    return _round(np.einsum(subscripts, pixels.astype(np.float64), weights)).astype(np.uint8)


_PROBES = 8
_STRIP = 4
