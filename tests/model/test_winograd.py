"""Winograd 3x3 convolution: the same result as ``F.conv2d`` and used where it pays off."""
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from napari_seem.model import winograd
from napari_seem.model.pixel_decoder.layers import ConvNorm, make_norm


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 5, 17, 23), (1, 4, 1, 6), (1, 2, 9, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_exact_in_float64(m, shape, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(7, shape[1], 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(7, generator=g, dtype=torch.float64) if bias else None
    for strip in (None, 1, 2):
        ours = winograd.conv3x3(x, w, b, m=m, strip_tiles=strip)
        ref = F.conv2d(x, w, b, padding=1)
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() < 1e-10


def test_matrices_are_integer_input_transforms():
    for m in (2, 4):
        at, g, bt = winograd.winograd_matrices(m)
        assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)
        assert torch.equal(bt, bt.round())


def _float32_errors(m: int = 4) -> tuple[float, float]:
    """Max error of the float32 Winograd convolution against float64, and the output's scale, at
    the size the model uses it (512 channels)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 512, 40, 40, generator=g)
    w = torch.randn(512, 512, 3, 3, generator=g) / (512 * 9) ** 0.5
    exact = F.conv2d(x.double(), w.double(), padding=1)
    ours = (winograd.conv3x3(x, w, m=m).double() - exact).abs().max().item()
    return ours, exact.abs().max().item()


def test_float32_error_well_within_the_parity_tolerance():
    """Winograd's float32 rounding error stays 10x below the 1e-4 of the official-parity checks
    (measured: 3.1-3.6e-6 of the output's scale for F(4, 3), 5e-7 for F(2, 3)). A direct float32
    convolution does better (3e-7 with oneDNN on an AVX-512 CPU), by a factor that depends on the
    CPU's convolution kernels, so it is no reference here."""
    for m, bound in ((4, 1e-5), (2, 2e-6)):
        ours, scale = _float32_errors(m)
        assert ours < bound * scale, (m, ours / scale)


def test_interpolation_points_halve_the_error(monkeypatch):
    """0, +-1, 1/2, -2 against Lavin & Gray's 0, +-1, +-2 (measured:
    3.6e-6 vs 7.6e-6 of the output's scale)."""
    ours, _ = _float32_errors()
    monkeypatch.setattr(winograd, "_points", lambda count: [Fraction(p) for p in (0, 1, -1, 2, -2)][:count])
    winograd.winograd_matrices.cache_clear()
    try:
        lavin, _ = _float32_errors()
    finally:
        monkeypatch.undo()
        winograd.winograd_matrices.cache_clear()
    assert ours < 0.7 * lavin, (ours, lavin)


def _conv(channels):
    torch.manual_seed(0)
    conv = ConvNorm(channels, channels, 3, padding=1, norm=make_norm("GN", channels), activation=F.relu)
    return conv.eval()


def test_convnorm_uses_winograd_only_for_large_cpu_inference(monkeypatch):
    calls = []
    original = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    conv = _conv(128)
    x = torch.randn(1, 128, 64, 64)
    with torch.inference_mode():
        fast = conv(x)
    assert len(calls) == 1
    with torch.inference_mode(), winograd.enabled(False):
        direct = conv(x)
    assert len(calls) == 1
    assert (fast - direct).abs().max() < 1e-4
    # training / autograd: the direct convolution (gradients flow through it)
    y = conv(x.requires_grad_())
    assert len(calls) == 1 and y.requires_grad
    # small maps and narrow layers: direct
    with torch.inference_mode():
        conv(torch.randn(1, 128, 16, 16))
        _conv(32)(torch.randn(1, 32, 64, 64))
    assert len(calls) == 1


def test_convnorm_in_place_output_equals_direct():
    conv = _conv(128)
    x = torch.randn(1, 128, 40, 36)
    with torch.inference_mode(), winograd.enabled(False):
        direct = conv(x.clone())
    with torch.inference_mode():
        buffer = x.clone()
        out = conv(buffer, reuse_input=True)
    assert out.data_ptr() == buffer.data_ptr()  # written into the input's memory
    assert (out - direct).abs().max() < 1e-4


@pytest.mark.parametrize("strip", [1, 2, None])
def test_in_place_convolution_reads_every_row_before_overwriting(strip):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 21, 10, generator=g, dtype=torch.float64)
    w = torch.randn(6, 6, 3, 3, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, padding=1)
    out = winograd.conv3x3(x, w, strip_tiles=strip, out=x)
    assert out is x
    assert (out - ref).abs().max() < 1e-10
