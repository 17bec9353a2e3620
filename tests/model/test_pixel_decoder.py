"""Pixel decoders: golden parity (FPN), official state-dict layout, deformable attention vs. references."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from golden import load_case, sub_state_dict

from napari_seem.model.pixel_decoder import (
    MSDeformAttnPixelDecoder,
    PositionEmbeddingSine,
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)
from napari_seem.model.pixel_decoder import ms_deform_attn as msda_module
from napari_seem.model.pixel_decoder.ms_deform_attn import MSDeformAttn, ms_deform_attn_core

PREFIX = "sem_seg_head.pixel_decoder."
STRIDES = {f"res{i}": 2**i for i in range(2, 6)}
TINY_CHANNELS = {f"res{i}": 16 * 2 ** (i - 2) for i in range(2, 6)}  # golden FocalNet embed 16


# ----------------------------------------------------------------------------- references


def naive_position_embedding(
    h: int, w: int, num_feats: int, normalize: bool, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel loop version of the sine embedding for one image: ``[2*num_feats, h, w]``."""
    valid = torch.ones(h, w, dtype=torch.bool) if mask is None else ~mask
    out = torch.zeros(2 * num_feats, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            y = float(valid[: i + 1, j].sum())
            x = float(valid[i, : j + 1].sum())
            if normalize:
                y = y / (float(valid[:, j].sum()) + 1e-6) * 2 * math.pi
                x = x / (float(valid[i, :].sum()) + 1e-6) * 2 * math.pi
            for k in range(num_feats):
                freq = 10000 ** (2 * (k // 2) / num_feats)
                fn = math.sin if k % 2 == 0 else math.cos
                out[k, i, j] = fn(y / freq)
                out[num_feats + k, i, j] = fn(x / freq)
    return out.float()


def loop_ms_deform_attn(value, spatial_shapes, locations, weights) -> torch.Tensor:
    """Explicit per-sample bilinear interpolation (pixel centres at +0.5, zeros outside)."""
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = locations.shape
    starts = [0]
    for h, w in spatial_shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    v64 = value.double()
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(spatial_shapes):
                    for p in range(n_points):
                        x = float(locations[b, q, head, lvl, p, 0]) * w - 0.5
                        y = float(locations[b, q, head, lvl, p, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(d, dtype=torch.float64)
                        for yi in (y0, y0 + 1):
                            for xi in (x0, x0 + 1):
                                if 0 <= yi < h and 0 <= xi < w:
                                    wt = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                    acc += wt * v64[b, starts[lvl] + yi * w + xi, head]
                        out[b, q, head] += float(weights[b, q, head, lvl, p]) * acc
    return out.reshape(n, lq, m * d).float()


def gather_ms_deform_attn(value, spatial_shapes, locations, weights) -> torch.Tensor:
    """Vectorised bilinear interpolation by explicit corner gathering (no ``grid_sample``)."""
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = locations.shape
    out = torch.zeros(n, lq, m, d, dtype=value.dtype)
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = value[:, start : start + h * w].permute(0, 2, 1, 3)  # [N, M, HW, D]
        start += h * w
        loc = locations[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(n, m, lq * n_points, 2)
        x = loc[..., 0] * w - 0.5
        y = loc[..., 1] * h - 0.5
        x0, y0 = x.floor(), y.floor()
        sampled = torch.zeros(n, m, lq * n_points, d, dtype=value.dtype)
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                wt = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
                corner = torch.gather(v, 2, idx[..., None].expand(-1, -1, -1, d))
                sampled += (wt * inside)[..., None] * corner
        wl = weights[:, :, :, lvl].permute(0, 2, 1, 3).reshape(n, m, lq * n_points, 1)
        out += (sampled * wl).view(n, m, lq, n_points, d).sum(3).permute(0, 2, 1, 3)
    return out.reshape(n, lq, m * d)


def random_deform_inputs(spatial_shapes, n=2, m=2, d=3, lq=5, n_points=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in spatial_shapes)
    value = torch.randn(n, s, m, d, generator=g)
    # locations partly outside [0, 1] to exercise the zero padding
    loc = torch.rand(n, lq, m, len(spatial_shapes), n_points, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(n, lq, m, len(spatial_shapes), n_points, generator=g)
    return value, loc, weights


# ----------------------------------------------------------------------------- position embedding


@pytest.mark.parametrize("normalize", [False, True])
def test_position_embedding_matches_formula(normalize: bool) -> None:
    x = torch.zeros(2, 5, 4, 6)
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[1, 3:, :] = True
    mask[1, :, 4:] = True
    pe = PositionEmbeddingSine(8, normalize=normalize)
    out = pe(x, mask)
    assert out.shape == (2, 16, 4, 6)
    for b in range(2):
        ref = naive_position_embedding(4, 6, 8, normalize, mask[b])
        assert (out[b] - ref).abs().max() < 1e-5
    assert torch.equal(pe(x), pe(x, torch.zeros(2, 4, 6, dtype=torch.bool)))


def test_position_embedding_scale_requires_normalize() -> None:
    with pytest.raises(ValueError):
        PositionEmbeddingSine(8, scale=1.0)


# ----------------------------------------------------------------------------- FPN decoder (golden)


@pytest.fixture(scope="module")
def tiny_fpn(tiny_yaml, tiny_state_dict) -> TransformerEncoderPixelDecoder:
    cfg = yaml.safe_load(tiny_yaml.read_text())
    model = build_pixel_decoder(cfg, TINY_CHANNELS, STRIDES)
    assert isinstance(model, TransformerEncoderPixelDecoder)
    model.load_state_dict(sub_state_dict(tiny_state_dict, PREFIX), strict=True)
    return model.eval()


@pytest.mark.parametrize("case_name", ["encode_A", "encode_B"])
def test_fpn_matches_golden(tiny_fpn, case_name: str) -> None:
    case = load_case(case_name)
    feats = {k: case[f"backbone_{k}"] for k in STRIDES}
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = tiny_fpn.forward_features(feats)
    errors = {
        "mask_features": (mask_features - case["mask_features"]).abs().max().item(),
        "transformer_encoder_features": (
            encoder_features - case["transformer_encoder_features"]
        ).abs().max().item(),
    }
    assert len(multi_scale) == 3
    for i, level in enumerate(multi_scale):
        assert level.shape == case[f"multi_scale_{i}"].shape
        errors[f"multi_scale_{i}"] = (level - case[f"multi_scale_{i}"]).abs().max().item()
    assert mask_features.shape == case["mask_features"].shape
    assert max(errors.values()) < 1e-4, errors


# ----------------------------------------------------------------------------- official state-dict layout

_FOCAL_T = {f"res{i}": 96 * 2 ** (i - 2) for i in range(2, 6)}
_FOCAL_L = {f"res{i}": 192 * 2 ** (i - 2) for i in range(2, 6)}
_SAM_VIT = {"res2": 128, "res3": 256, "res4": 512, "res5": 1024}  # SimpleFPN neck of SAM ViT-B/L


def full_size_cfg(name: str) -> dict:
    """The pixel-decoder fields of the official full-size configs (all four share them)."""
    return {
        "MODEL": {
            "ENCODER": {
                "NAME": name,
                "CONVS_DIM": 512,
                "MASK_DIM": 512,
                "NORM": "GN",
                "IN_FEATURES": ["res2", "res3", "res4", "res5"],
                "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
                "COMMON_STRIDE": 4,
                "TRANSFORMER_ENC_LAYERS": 6,
            },
            "DECODER": {"NHEADS": 8, "DIM_FEEDFORWARD": 2048, "PRE_NORM": False, "DROPOUT": 0.0},
        }
    }


@pytest.mark.parametrize(
    ("config", "encoder", "channels"),
    [
        ("focalt_unicl_lang_v1", "transformer_encoder_fpn", _FOCAL_T),
        ("focall_unicl_lang_v1", "transformer_encoder_fpn", _FOCAL_L),
        ("samvitb_unicl_lang_v1", "transformer_encoder_deform", _SAM_VIT),
        ("samvitl_unicl_lang_v1", "transformer_encoder_deform", _SAM_VIT),
    ],
)
def test_state_dict_matches_spec(spec_dir, config: str, encoder: str, channels: dict) -> None:
    spec = json.loads((spec_dir / f"{config}.json").read_text())
    assert spec["encoder"] == encoder
    expected = [
        (e["name"][len(PREFIX) :], tuple(e["shape"]))
        for e in spec["state_dict"]
        if e["name"].startswith(PREFIX)
    ]
    with torch.device("meta"):
        model = build_pixel_decoder(full_size_cfg(encoder), channels, STRIDES)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected  # same names, shapes and order


def test_unknown_encoder_name() -> None:
    with pytest.raises(ValueError):
        build_pixel_decoder(full_size_cfg("no_such_encoder"), _FOCAL_T, STRIDES)


# ----------------------------------------------------------------------------- deformable attention


def test_ms_deform_attn_core_matches_loop() -> None:
    shapes = [(3, 4), (2, 5), (1, 2)]
    value, loc, weights = random_deform_inputs(shapes)
    out = ms_deform_attn_core(value, shapes, loc, weights)
    ref = loop_ms_deform_attn(value, shapes, loc, weights)
    assert out.shape == (2, 5, 2 * 3)
    assert (out - ref).abs().max() < 1e-5
    gathered = gather_ms_deform_attn(value, shapes, loc, weights)
    assert (gathered - ref).abs().max() < 1e-5


def test_ms_deform_attn_core_exact_at_pixel_centres() -> None:
    # a single point exactly at a pixel centre with weight 1 reads that pixel
    h, w = 3, 5
    value = torch.randn(1, h * w, 1, 4)
    loc = torch.tensor([(2 + 0.5) / w, (1 + 0.5) / h]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn_core(value, [(h, w)], loc, torch.ones(1, 1, 1, 1, 1))
    assert torch.allclose(out[0, 0], value[0, 1 * w + 2, 0], atol=1e-6)


def _perturb_(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_ms_deform_attn_module_with_gather_sampler(monkeypatch) -> None:
    shapes = [(2, 3), (4, 6), (8, 12)]
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=4).eval()
    _perturb_(attn, 1)
    g = torch.Generator().manual_seed(2)
    s = sum(h * w for h, w in shapes)
    query, x = torch.randn(2, s, 16, generator=g), torch.randn(2, s, 16, generator=g)
    ref_points = torch.rand(2, s, 3, 2, generator=g)
    with torch.no_grad():
        out = attn(query, ref_points, x, shapes)
        monkeypatch.setattr(msda_module, "ms_deform_attn_core", gather_ms_deform_attn)
        ref = attn(query, ref_points, x, shapes)
    assert (out - ref).abs().max() < 1e-5


# ----------------------------------------------------------------------------- deformable decoder


def _tiny_deform_decoder() -> MSDeformAttnPixelDecoder:
    torch.manual_seed(0)
    cfg = full_size_cfg("transformer_encoder_deform")
    cfg["MODEL"]["ENCODER"].update(CONVS_DIM=32, MASK_DIM=24, TRANSFORMER_ENC_LAYERS=2)
    cfg["MODEL"]["DECODER"].update(NHEADS=4)
    model = build_pixel_decoder(cfg, {"res2": 8, "res3": 16, "res4": 24, "res5": 40}, STRIDES)
    assert isinstance(model, MSDeformAttnPixelDecoder)
    _perturb_(model, 3)
    return model.eval()


def test_deformable_decoder_forward_non_square(monkeypatch) -> None:
    model = _tiny_deform_decoder()
    h, w = 64, 160
    g = torch.Generator().manual_seed(4)
    channels = {"res2": 8, "res3": 16, "res4": 24, "res5": 40}
    feats = {k: torch.randn(2, c, h // STRIDES[k], w // STRIDES[k], generator=g) for k, c in channels.items()}
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = model.forward_features(feats)
        # same decoder with the independent gather-based sampler
        monkeypatch.setattr(msda_module, "ms_deform_attn_core", gather_ms_deform_attn)
        ref_mask, ref_enc, ref_ms = model.forward_features(feats)
        monkeypatch.undo()
        single = model.forward_features({k: v[1:] for k, v in feats.items()})

    assert mask_features.shape == (2, 24, h // 4, w // 4)
    assert [tuple(t.shape) for t in multi_scale] == [
        (2, 32, h // 32, w // 32),
        (2, 32, h // 16, w // 16),
        (2, 32, h // 8, w // 8),
    ]
    assert torch.equal(encoder_features, multi_scale[0])
    assert (mask_features - ref_mask).abs().max() < 1e-5
    for a, b in zip(multi_scale, ref_ms):
        assert (a - b).abs().max() < 1e-5
    # batch elements are independent
    assert (single[0] - mask_features[1:]).abs().max() < 1e-5
    # the finest FPN level feeds the 1x1 mask projection
    fpn_level = model.layer_1(
        model.adapter_1(feats["res2"])
        + torch.nn.functional.interpolate(
            multi_scale[2], size=(h // 4, w // 4), mode="bilinear", align_corners=False
        )
    )
    assert (model.mask_features(fpn_level) - mask_features).abs().max() < 1e-5
