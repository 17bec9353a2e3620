"""3x3 convolution by Winograd's minimal filtering, ``F(m x m, 3 x 3)``, for large CPU feature maps.

The FPN pixel decoder of SEEM (Focal-T/L) ends in two 3x3, 512 -> 512 convolutions at stride 4:
at 1024 x 1024 they cost ~620 GFLOP, two thirds of the whole image encoding on a CPU, and
oneDNN already runs them at the processor's peak. Winograd's algorithm computes the same
convolution with ``(m + 2)^2 / (9 m^2)`` of the multiplications (``m = 4``: 4x fewer) as a batch
of ordinary matrix products, plus cheap linear transforms of the input tiles and the outputs.

The result equals ``F.conv2d(x, weight, bias, padding=1)`` up to float rounding (the transforms
reorder the sums; the error is measured in ``tests/model/test_winograd.py``: about 4e-6 of the
output's scale in float32 for ``m = 4``, 25x below the 1e-4 of the official-parity checks). The
matrices come from exact rational Toom-Cook interpolation at the points ``0, +-1, 1/2, -2, ...,
infinity`` (see :func:`_points`); the rows of the input transform are scaled to integers (the
fractions go into the filter transform, which is computed once per weight), as in Lavin & Gray
(2016).

The image is processed in horizontal strips, so the transformed tiles never need more than a
few tens of MB whatever the image size.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL = 3
#: smallest channel count (in and out) and feature-map size where Winograd is used. The crossover
#: depends on the CPU: where first measured, 2.2-2.4x faster than oneDNN from 256 channels at 32 x 32
#: upwards (no gain at 64 channels); on an AVX-512 EPYC, where oneDNN is faster, 512 channels
#: lose at 32 x 32 (0.7x), break even at 64 x 64 and gain from 128 x 128 (1.1x; 1.26x at
#: 256 x 256), and 128-256 channels lose below 256 x 256. SEEM's 3x3 convolutions have 512 channels, the large ones at stride 4: there,
#: 32 x 32 or 64 x 64 as the limit makes no measurable difference to a whole encoding.
MIN_CHANNELS = 128
MIN_PIXELS = 32 * 32

_enabled = True


def is_enabled() -> bool:
    """Whether eligible 3x3 convolutions use Winograd (see :func:`enabled`)."""
    return _enabled


@contextmanager
def enabled(flag: bool):
    """Switch Winograd convolutions on or off inside a ``with`` block (direct convolution: ``False``)."""
    global _enabled
    previous, _enabled = _enabled, flag
    try:
        yield
    finally:
        _enabled = previous


def _points(count: int) -> list[Fraction]:
    """The ``count`` finite interpolation points: ``0, 1, -1, 1/2, -2, -1/2, 2, 1/4, -4, ...``.

    For ``F(4, 3)`` (5 points) ``0, +-1, 1/2, -2`` instead of Lavin & Gray's ``0, +-1, +-2``
    halve the float32 error (measured in ``tests/model/test_winograd.py``; on how the points set
    the error: Barabasz et al. 2020, "Error analysis and improving the accuracy of Winograd
    convolution for deep neural networks").
    """
    points = [Fraction(0), Fraction(1), Fraction(-1)]
    k = 2
    while len(points) < count:
        points += [Fraction(1, k), Fraction(-k), Fraction(-1, k), Fraction(k)]
        k *= 2
    return points[:count]


def _evaluation(points: list[Fraction], size: int) -> list[list[Fraction]]:
    """``[t, size]``: rows evaluate a polynomial of ``size`` coefficients at each point (last: infinity)."""
    rows = [[p**i for i in range(size)] for p in points]
    rows.append([Fraction(int(i == size - 1)) for i in range(size)])
    return rows


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse by Gauss-Jordan elimination."""
    n = len(matrix)
    a = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        scale = a[col][col]
        a[col] = [v / scale for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                factor = a[r][col]
                a[r] = [v - factor * w for v, w in zip(a[r], a[col])]
    return [row[n:] for row in a]


@lru_cache(maxsize=None)
def winograd_matrices(m: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(AT [m, t], G [t, 3], BT [t, t])`` of ``F(m, 3)`` (``t = m + 2``), float64.

    1-D correlation of a length-``t`` input ``d`` with a 3-tap filter ``g``:
    ``y = AT @ ((G @ g) * (BT @ d))``, ``y[i] = sum_k g[k] d[i + k]``.
    """
    t = m + KERNEL - 1
    points = _points(t - 1)
    vandermonde = _evaluation(points, t)
    inv = _inverse(vandermonde)
    bt = [list(col) for col in zip(*inv)]  # V^-T: correlation is the transposed linear convolution
    g = _evaluation(points, KERNEL)
    at = [list(col) for col in zip(*_evaluation(points, m))]
    for j, row in enumerate(bt):  # integer input transform; its scale moves into the filter transform
        scale = math.lcm(*(v.denominator for v in row))
        bt[j] = [v * scale for v in row]
        g[j] = [v / scale for v in g[j]]

    def tensor(rows):
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    return tensor(at), tensor(g), tensor(bt)


def transform_filter(weight: Tensor, m: int = 4) -> Tensor:
    """``[K, C, 3, 3]`` filters -> ``[t*t, K, C]`` Winograd-domain filters (``G w G^T``).

    One small matrix product (~40 ms for 512 x 512 filters on one CPU core), cheap enough to
    redo at every call rather than keep ~38 MB per layer.
    """
    _, g, _ = winograd_matrices(m)
    kron_g = torch.kron(g, g).to(weight)  # [t*t, 9]
    return (kron_g @ weight.reshape(-1, KERNEL * KERNEL).T).view(-1, *weight.shape[:2])


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None, m: int = 4,
            filters: Tensor | None = None, strip_tiles: int | None = None, out: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for ``x [B, C, H, W]``, ``weight [K, C, 3, 3]``.

    Args:
        m: output tile size (``2``: 2.25x fewer multiplications, ``4``: 4x).
        filters: ``transform_filter(weight, m)``, when already computed.
        strip_tiles: tile rows per strip (default: ~256 tiles per strip).
        out: ``[B, K, H, W]`` tensor to write the result to; may be ``x`` itself (``K == C``):
            each strip's result is written once the next strip's input rows have been read,
            so the convolution needs no second full-size map.
    """
    if weight.shape[-2:] != (KERNEL, KERNEL):
        raise ValueError(f"conv3x3 needs 3x3 filters, got {tuple(weight.shape)}")
    at, _, bt = winograd_matrices(m)
    t = m + KERNEL - 1
    b, c, h, w = x.shape
    k = weight.shape[0]
    u = transform_filter(weight, m) if filters is None else filters
    tiles_h, tiles_w = -(-h // m), -(-w // m)
    bt, at = bt.to(x), at.to(x)
    if strip_tiles is None:
        strip_tiles = max(1, 256 // tiles_w)  # ~256 tiles per matrix product: fastest measured
    if out is None:
        out = x.new_empty(b, k, h, w)
    elif tuple(out.shape) != (b, k, h, w):
        raise ValueError(f"out must have shape {(b, k, h, w)}, got {tuple(out.shape)}")
    pad_w = (1, tiles_w * m - w + 1)
    pending = None  # (image, first row, result) of the previous strip, written after the next read
    for i in range(b):
        for r0 in range(0, tiles_h, strip_tiles):
            r1 = min(tiles_h, r0 + strip_tiles)
            # input rows of this strip with the 1-pixel halo, zero-padded like the convolution
            top, bottom = r0 * m - 1, r1 * m + 1
            rows = F.pad(x[i, :, max(0, top):min(h, bottom)], (*pad_w, max(0, -top), max(0, bottom - h)))
            if pending is not None:
                _write(out, *pending)
            tiles = rows.unfold(1, t, m).unfold(2, t, m)  # [C, TR, TW, t, t]
            n = (r1 - r0) * tiles_w
            d = tiles.permute(3, 4, 0, 1, 2).reshape(t, t * c * n)
            # 2-D input transform BT d B, one axis at a time (3x fewer operations than kron(BT, BT))
            v = torch.matmul(bt, (bt @ d).view(t, t, c * n)).view(t * t, c, n)
            mm = torch.bmm(u, v)  # [t*t, K, n]: the convolution, one matrix product per tile position
            y = torch.matmul(at, (at @ mm.view(t, t * k * n)).view(m, t, k * n))
            pending = (i, r0 * m, y.view(m, m, k, r1 - r0, tiles_w))
    _write(out, *pending)
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


def _write(out: Tensor, image: int, row: int, tiles: Tensor) -> None:
    """Write a strip's output tiles ``[m, m, K, TR, TW]`` into ``out[image, :, row:]``."""
    m, _, k, tr, tw = tiles.shape
    rows = min(out.shape[-2] - row, tr * m)
    target = out[image, :, row:row + rows]
    if rows == tr * m and out.shape[-1] == tw * m and out.is_contiguous():
        target.view(k, tr, m, tw, m).copy_(tiles.permute(2, 3, 0, 4, 1))  # one copy, no staging
    else:
        target.copy_(tiles.permute(2, 3, 0, 4, 1).reshape(k, tr * m, tw * m)[:, :rows, :out.shape[-1]])
