"""Image backbones: official state-dict names/shapes and numerical parity with official SEEM."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from golden import load_case, sub_state_dict

from napari_seem.model.backbone import FocalNet, SamViT, build_backbone

RES = ("res2", "res3", "res4", "res5")

_FOCAL_COMMON = {
    "PRETRAIN_IMG_SIZE": 224, "PATCH_SIZE": 4, "MLP_RATIO": 4.0, "DROP_RATE": 0.0, "DROP_PATH_RATE": 0.3,
    "PATCH_NORM": True, "USE_CONV_EMBED": True, "SCALING_MODULATOR": True, "USE_CHECKPOINT": False,
    "USE_POSTLN": True, "USE_POSTLN_IN_MODULATION": False, "USE_LAYERSCALE": True,
    "OUT_FEATURES": list(RES), "OUT_INDICES": [0, 1, 2, 3],
}
#: full-size backbone hyper-parameters of the official configs (configs/seem/<name>.yaml)
FULL_SIZE = {
    "focalt_unicl_lang_v1": ("focal_dw", {"FOCAL": {
        **_FOCAL_COMMON, "EMBED_DIM": 96, "DEPTHS": [2, 2, 6, 2], "FOCAL_LEVELS": [3] * 4, "FOCAL_WINDOWS": [3] * 4}}),
    "focall_unicl_lang_v1": ("focal", {"FOCAL": {
        **_FOCAL_COMMON, "EMBED_DIM": 192, "DEPTHS": [2, 2, 18, 2], "FOCAL_LEVELS": [4] * 4, "FOCAL_WINDOWS": [3] * 4}}),
    "samvitb_unicl_lang_v1": ("vit", {"VIT": {"SIZE": "base", "OUT_FEATURES": list(RES)}}),
    "samvitl_unicl_lang_v1": ("vit", {"VIT": {"SIZE": "large", "OUT_FEATURES": list(RES)}}),
}
#: Focal-L architecture (``focal`` blocks, 4 focal levels) at toy width/depth
FOCAL_L_TINY = {"FOCAL": {**_FOCAL_COMMON, "EMBED_DIM": 16, "DEPTHS": [1, 1, 2, 1],
                          "FOCAL_LEVELS": [4] * 4, "FOCAL_WINDOWS": [3] * 4}}
#: SAM ViT at toy size: 8x8 token grid, window 3 (grid padded to 9), block 1 global
SAM_TINY = {"img_size": 64, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2,
            "window_size": 3, "global_attn_indexes": [1], "neck_out_dims": [8, 16, 24, 40]}


def _as_cfg(name: str, backbone_fields: dict) -> dict:
    return {"MODEL": {"BACKBONE": {"NAME": name, "PRETRAINED": "", "LOAD_PRETRAINED": False, **backbone_fields}}}


def seeded_state_dict(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic, well-scaled random values for every state-dict entry of ``module``."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, ref in module.state_dict().items():
        value = torch.randn(ref.shape, generator=gen)
        if ref.dim() > 1:
            value = value / math.sqrt(ref[0].numel())
        elif name.endswith("weight"):
            value = 1.0 + 0.1 * value
        else:
            value = 0.1 * value
        out[name] = value
    return out


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def probe(t: torch.Tensor) -> list[float]:
    """Six evenly strided elements and the mean absolute value of ``t``."""
    flat = t.flatten()
    return flat[:: max(1, flat.numel() // 6)][:6].tolist() + [t.abs().mean().item()]


@pytest.fixture(scope="module")
def tiny_backbone(tiny_yaml, tiny_state_dict) -> torch.nn.Module:
    cfg = yaml.safe_load(tiny_yaml.read_text())
    model = build_backbone(cfg).eval()
    model.load_state_dict(sub_state_dict(tiny_state_dict, "backbone."), strict=True)
    return model


def test_unknown_backbone_name_raises() -> None:
    with pytest.raises(ValueError, match="resnet"):
        build_backbone(_as_cfg("resnet", {}))


@pytest.mark.parametrize("case", ["encode_A", "encode_B"])
def test_tiny_focal_dw_matches_official(tiny_backbone, case: str) -> None:
    data = load_case(case)
    with torch.no_grad():
        out = tiny_backbone(data["images_tensor"])
    assert sorted(out) == list(RES)
    for key in RES:
        ref = data[f"backbone_{key}"]
        assert out[key].shape == ref.shape
        assert (out[key] - ref).abs().max().item() < 1e-4, key


def test_tiny_focal_dw_channels_strides_and_unpadded_size(tiny_backbone) -> None:
    assert tiny_backbone.out_channels == {"res2": 16, "res3": 32, "res4": 64, "res5": 128}
    assert tiny_backbone.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    with torch.no_grad():
        out = tiny_backbone(torch.randn(1, 3, 100, 72))
    for key, stride in tiny_backbone.out_strides.items():
        expected = (1, tiny_backbone.out_channels[key], math.ceil(100 / stride), math.ceil(72 / stride))
        assert tuple(out[key].shape) == expected


@pytest.mark.parametrize("config", sorted(FULL_SIZE))
def test_state_dict_matches_official_spec(spec_dir, config: str) -> None:
    spec = json.loads((spec_dir / f"{config}.json").read_text())
    expected = [(e["name"][len("backbone."):], tuple(e["shape"]))
                for e in spec["state_dict"] if e["name"].startswith("backbone.")]
    assert spec["backbone"] == FULL_SIZE[config][0]
    with torch.device("meta"):
        model = build_backbone(_as_cfg(*FULL_SIZE[config]))
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert set(model.out_channels) == set(model.out_strides) == set(RES)


# Recorded from the official modeling/vision/backbone/focal.py (D2FocalNet) with
# seeded_state_dict(seed=7) on seeded_input((1, 3, 67, 45), seed=8); see probe().
FOCAL_L_TINY_OFFICIAL: dict[str, list[float]] = {
    "res2": [1.387083, 0.806174, -2.145713, -1.190759, 0.378210, -0.797137, 0.837479],
    "res3": [-1.182759, -0.576429, -0.586208, -0.041108, -1.618176, 1.229357, 0.802046],
    "res4": [-0.012243, -0.625754, -0.662499, 1.399611, 1.408522, -1.361528, 0.805723],
    "res5": [1.983130, -0.838809, -2.079957, -0.126873, 1.645109, -0.963303, 0.799835],
}


def test_focal_variant_odd_size_matches_official_record() -> None:
    model = build_backbone(_as_cfg("focal", FOCAL_L_TINY)).eval()
    assert isinstance(model, FocalNet)
    model.load_state_dict(seeded_state_dict(model, 7), strict=True)
    with torch.no_grad():
        out = model(seeded_input((1, 3, 67, 45), 8))
    assert [tuple(out[k].shape) for k in RES] == [(1, 16, 17, 12), (1, 32, 9, 6), (1, 64, 5, 3), (1, 128, 3, 2)]
    for key in RES:
        assert probe(out[key]) == pytest.approx(FOCAL_L_TINY_OFFICIAL[key], abs=1e-4), key


# Recorded from the official modeling/vision/backbone/vit.py (ImageEncoderViT + SimpleFPN at
# SAM_TINY) with seeded_state_dict(seed=9) on seeded_input((2, 3, 67, 71), seed=10).
SAM_TINY_OFFICIAL: dict[str, list[float]] = {
    "res2": [0.057444, 0.665612, -0.023818, -0.159960, 0.015082, -0.169187, 0.411664],
    "res3": [-0.169837, -0.156473, -0.016893, 0.188922, -0.162219, 0.817949, 0.384520],
    "res4": [-0.166646, -0.167388, 0.022969, 1.339438, 0.069634, -0.169573, 0.402249],
    "res5": [0.728885, -0.092506, 0.000141, -0.151004, -0.169836, -0.162267, 0.409112],
}


def test_sam_vit_tiny_odd_size_matches_official_record() -> None:
    model = SamViT(**SAM_TINY).eval()
    model.load_state_dict(seeded_state_dict(model, 9), strict=True)
    with torch.no_grad():
        out = model(seeded_input((2, 3, 67, 71), 10))
    assert [tuple(out[k].shape) for k in RES] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 24, 8, 8), (2, 40, 4, 4)]
    for key in RES:
        assert probe(out[key]) == pytest.approx(SAM_TINY_OFFICIAL[key], abs=1e-4), key


def test_sam_vit_ignores_pixels_beyond_whole_patches() -> None:
    model = SamViT(**SAM_TINY).eval()
    model.load_state_dict(seeded_state_dict(model, 3), strict=True)
    x = seeded_input((1, 3, 67, 71), 4)
    with torch.no_grad():
        odd, cropped = model(x), model(x[:, :, :64, :64])
    for key in RES:
        torch.testing.assert_close(odd[key], cropped[key], rtol=0, atol=1e-6)


def test_sam_vit_rejects_wrong_token_grid() -> None:
    model = SamViT(**SAM_TINY).eval()
    with pytest.raises(ValueError, match="token grid"):
        model(torch.zeros(1, 3, 80, 64))
