"""Inference shortcuts that save memory or time must give the same numbers as the plain ops."""
import pytest
import torch
import torch.nn.functional as F

from napari_seem.model.backbone.focal import _Mlp
from napari_seem.model.decoder.seem_decoder import bilinear_downsample
from napari_seem.model.pixel_decoder.fpn import _add_upsampled
from napari_seem.model.pixel_decoder.layers import group_norm_
from napari_seem.model.postprocess import panoptic_inference


@pytest.mark.parametrize("size", [(16, 16), (8, 8), (4, 4), (32, 32), (12, 12), (16, 8), (10, 7)])
def test_bilinear_downsample_equals_interpolate(size):
    x = torch.randn(2, 5, 64, 64)
    ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    ours = bilinear_downsample(x, size)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 1e-6


def test_add_upsampled_equals_nearest_interpolation():
    lateral, coarse = torch.randn(1, 4, 10, 14), torch.randn(1, 4, 5, 7)
    ref = lateral + F.interpolate(coarse, size=(10, 14), mode="nearest")
    with torch.inference_mode():
        buffer = lateral.clone()
        out = _add_upsampled(buffer, coarse)
        assert out.data_ptr() == buffer.data_ptr()  # in place, no upsampled copy
        assert torch.equal(out, ref)
        odd = _add_upsampled(torch.randn(1, 4, 11, 14), coarse)  # not exactly 2x: plain path
        assert odd.shape == (1, 4, 11, 14)
    # with autograd the inputs are left alone
    grad_lateral = lateral.clone().requires_grad_()
    assert torch.allclose(_add_upsampled(grad_lateral, coarse), ref)
    assert torch.equal(grad_lateral.detach(), lateral)


def test_group_norm_in_place_equals_module():
    norm = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 8, 9, 11) * 3 + 1
    ref = norm(x)
    out = group_norm_(x.clone(), norm)
    assert (out - ref).abs().max() < 1e-5


def test_chunked_mlp_equals_whole():
    torch.manual_seed(0)
    mlp = _Mlp(6, 24).eval()
    x = torch.randn(1, 20, 30, 6)
    whole = mlp(x)  # autograd on: never chunked
    mlp.chunk_tokens = 64
    with torch.inference_mode():
        chunked = mlp(x)
    assert chunked.shape == whole.shape
    assert (chunked - whole).abs().max() < 1e-6


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_panoptic_merge_by_chunks_equals_upsampling_all(chunk):
    g = torch.Generator().manual_seed(0)
    q, k = 12, 5
    cls = torch.randn(q, k + 1, generator=g) * 3
    cls[:, -1] -= 2  # most queries keep a class
    low = torch.randn(q, 8, 8, generator=g) * 4

    def up(x):
        return F.interpolate(x[None], size=(32, 32), mode="bilinear", align_corners=False)[0]

    ref = panoptic_inference(cls, up(low), [0, 1, 2], 0.2, 0.5)
    ours = panoptic_inference(cls, low, [0, 1, 2], 0.2, 0.5, upsample=up, chunk=chunk)
    assert ref.segments and ours.segments == ref.segments
    assert torch.equal(ours.segmentation, ref.segmentation)
