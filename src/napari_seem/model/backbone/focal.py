"""FocalNet image backbones of SEEM: ``focal`` (Focal-L) and ``focal_dw`` (Focal-T).

Both variants share the focal modulation operator, the patch embeddings, the stage layout and
the per-stage output norms ``norm{i}``. They differ in the block:

* ``focal_dw`` adds a residual 3x3 depthwise conv (``dw1``/``dw2``) before the modulation and
  before the MLP, and with post-LN normalises *after* each residual sum;
* ``focal`` has no depthwise convs, and with post-LN normalises the branch output *before* the
  residual sum (``x + gamma * norm(branch(x))``);

and in the padding of the 7x7 stride-4 stem conv (3 for ``focal_dw``, 2 for ``focal``).

Inside the stages, features are kept channels-last, ``[B, H, W, C]``; LayerNorms act on ``C``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FocalNet", "build_focalnet"]

_OUT_NAMES = ("res2", "res3", "res4", "res5")


class _Mlp(nn.Module):
    """Two-layer GELU MLP on the last dimension: ``[..., C] -> [..., C]``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    #: in inference, tokens per chunk: the hidden activations (4x the width) of a 1024² image
    #: would otherwise take ~0.2 GB at stride 4; each token is computed independently
    chunk_tokens = 16384

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x[..., 0].numel() <= 2 * self.chunk_tokens:
            return self.fc2(self.act(self.fc1(x)))
        flat = x.reshape(-1, x.shape[-1])
        out = flat.new_empty(flat.shape[0], self.fc2.out_features)
        for start in range(0, flat.shape[0], self.chunk_tokens):
            part = flat[start:start + self.chunk_tokens]
            out[start:start + self.chunk_tokens] = self.fc2(self.act(self.fc1(part)))
        return out.view(*x.shape[:-1], -1)


class FocalModulation(nn.Module):
    """Focal modulation: a query modulated by gated multi-level depthwise context.

    ``f`` projects each token to (query, context, ``focal_level + 1`` gates). Level ``k`` applies
    a depthwise conv of kernel ``focal_window + 2k`` followed by GELU to the previous level's
    context; the last level's global average (GELU) forms an extra level. The gated sum (divided
    by ``focal_level + 1`` when ``scaling_modulator``) goes through the 1x1 conv ``h`` and
    multiplies the query.
    """

    def __init__(
        self,
        dim: int,
        focal_level: int,
        focal_window: int,
        scaling_modulator: bool = False,
        use_postln_in_modulation: bool = False,
    ) -> None:
        super().__init__()
        self.focal_level = focal_level
        self.scaling_modulator = scaling_modulator
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim) if use_postln_in_modulation else None
        self.focal_layers = nn.ModuleList()
        for k in range(focal_level):
            kernel = focal_window + 2 * k
            self.focal_layers.append(
                nn.Sequential(
                    nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False),
                    nn.GELU(),
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, H, W, C] -> [B, H, W, C]``."""
        dim = x.shape[-1]
        x = self.f(x).permute(0, 3, 1, 2)
        q, ctx, gates = torch.split(x, (dim, dim, self.focal_level + 1), dim=1)
        # channels-last throughout: the depthwise convolutions run on it without layout copies,
        # and the 1x1 conv ``h`` becomes a plain matrix product on the [B, H, W, C] view
        ctx = ctx.contiguous(memory_format=torch.channels_last)

        ctx_all: Tensor | float = 0.0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_global = self.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.scaling_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)

        modulator = F.linear(ctx_all.permute(0, 2, 3, 1), self.h.weight.view(dim, dim), self.h.bias)
        out = q.permute(0, 2, 3, 1) * modulator
        if self.ln is not None:
            out = self.ln(out)
        return self.proj(out)


class FocalBlock(nn.Module):
    """One FocalNet block (modulation branch + MLP branch), ``[B, H, W, C] -> [B, H, W, C]``.

    ``depthwise=True`` gives the ``focal_dw`` block (state-dict entries ``dw1``/``dw2``),
    ``False`` the ``focal`` block; the two place the post-LN norms differently (module doc).
    """

    def __init__(
        self,
        dim: int,
        focal_level: int,
        focal_window: int,
        depthwise: bool,
        mlp_ratio: float = 4.0,
        use_postln: bool = False,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = False,
        use_layerscale: bool = False,
        layerscale_value: float = 1e-4,
    ) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.use_postln = use_postln
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), layerscale_value))
            self.gamma_2 = nn.Parameter(torch.full((dim,), layerscale_value))
        else:
            self.gamma_1 = self.gamma_2 = None
        if depthwise:
            self.dw1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(
            dim, focal_level, focal_window, scaling_modulator, use_postln_in_modulation
        )
        if depthwise:
            self.dw2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    @staticmethod
    def _scale(gamma: Tensor | None, x: Tensor) -> Tensor:
        return x if gamma is None else gamma * x

    @staticmethod
    def _dw_residual(conv: nn.Conv2d, x: Tensor) -> Tensor:
        return x + conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.depthwise:
            return self._forward_dw(x)
        return self._forward_plain(x)

    def _forward_dw(self, x: Tensor) -> Tensor:
        x = self._dw_residual(self.dw1, x)
        if self.use_postln:
            x = self.norm1(x + self._scale(self.gamma_1, self.modulation(x)))
        else:
            x = x + self._scale(self.gamma_1, self.modulation(self.norm1(x)))
        x = self._dw_residual(self.dw2, x)
        if self.use_postln:
            return self.norm2(x + self._scale(self.gamma_2, self.mlp(x)))
        return x + self._scale(self.gamma_2, self.mlp(self.norm2(x)))

    def _forward_plain(self, x: Tensor) -> Tensor:
        if self.use_postln:
            x = x + self._scale(self.gamma_1, self.norm1(self.modulation(x)))
            return x + self._scale(self.gamma_2, self.norm2(self.mlp(x)))
        x = x + self._scale(self.gamma_1, self.modulation(self.norm1(x)))
        return x + self._scale(self.gamma_2, self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Strided conv embedding + optional LayerNorm: ``[B, Cin, H, W] -> [B, H', W', Cout]``.

    The input is first zero-padded at the bottom/right to a multiple of ``patch_size``. With
    ``use_conv_embed`` the conv is overlapping: 7x7 stride 4 for the stem (padding
    ``stem_padding``), 3x3 stride 2 padding 1 for the downsamplers; otherwise it is a
    ``patch_size`` x ``patch_size`` conv with the same stride.
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        use_norm: bool,
        use_conv_embed: bool,
        is_stem: bool,
        stem_padding: int = 3,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        if use_conv_embed and is_stem:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=stem_padding)
        elif use_conv_embed:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=3, stride=2, padding=1)
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if use_norm else None

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        pad_h = (-height) % self.patch_size
        pad_w = (-width) % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x).permute(0, 2, 3, 1)
        if self.norm is not None:
            x = self.norm(x)
        return x


class FocalStage(nn.Module):
    """A stage: ``depth`` blocks, then an optional 2x downsampling :class:`PatchEmbed`."""

    def __init__(self, dim: int, depth: int, downsample: bool, use_conv_embed: bool, **block_kwargs: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FocalBlock(dim, **block_kwargs) for _ in range(depth))
        self.downsample = (
            PatchEmbed(2, dim, 2 * dim, use_norm=True, use_conv_embed=use_conv_embed, is_stem=False)
            if downsample
            else None
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, H, W, C]`` -> (stage output ``[B, H, W, C]``, next-stage input
        ``[B, ceil(H/2), ceil(W/2), 2C]``; the stage output itself when there is no downsampler)."""
        for block in self.blocks:
            x = block(x)
        if self.downsample is None:
            return x, x
        return x, self.downsample(x.permute(0, 3, 1, 2))


class FocalNet(nn.Module):
    """FocalNet backbone with outputs ``res2..res5`` at strides 4, 8, 16, 32.

    ``variant`` is ``"focal_dw"`` or ``"focal"``. Any input size works: every embedding pads
    its input to a multiple of its stride, so ``res{i+2}`` has spatial size
    ``ceil(H / 2**(i+2)) x ceil(W / 2**(i+2))`` (for a stride-4 stem).
    """

    size_divisibility = 32

    def __init__(
        self,
        variant: str = "focal_dw",
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        mlp_ratio: float = 4.0,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        out_features: Sequence[str] = _OUT_NAMES,
        focal_levels: Sequence[int] = (2, 2, 2, 2),
        focal_windows: Sequence[int] = (9, 9, 9, 9),
        use_conv_embed: bool = False,
        use_postln: bool = False,
        use_postln_in_modulation: bool = False,
        scaling_modulator: bool = False,
        use_layerscale: bool = False,
    ) -> None:
        super().__init__()
        if variant not in ("focal_dw", "focal"):
            raise ValueError(f"unknown FocalNet variant {variant!r}")
        num_stages = len(depths)
        self.num_features = [embed_dim * 2**i for i in range(num_stages)]
        self.out_indices = list(out_indices)
        self._returned = [i for i in self.out_indices if _OUT_NAMES[i] in out_features]
        self.patch_embed = PatchEmbed(
            patch_size,
            in_chans,
            embed_dim,
            use_norm=patch_norm,
            use_conv_embed=use_conv_embed,
            is_stem=True,
            stem_padding=3 if variant == "focal_dw" else 2,
        )
        self.layers = nn.ModuleList(
            FocalStage(
                self.num_features[i],
                depths[i],
                downsample=i < num_stages - 1,
                use_conv_embed=use_conv_embed,
                focal_level=focal_levels[i],
                focal_window=focal_windows[i],
                depthwise=variant == "focal_dw",
                mlp_ratio=mlp_ratio,
                use_postln=use_postln,
                use_postln_in_modulation=use_postln_in_modulation,
                scaling_modulator=scaling_modulator,
                use_layerscale=use_layerscale,
            )
            for i in range(num_stages)
        )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        stem_stride = 4 if use_conv_embed else patch_size
        self.out_channels = {_OUT_NAMES[i]: self.num_features[i] for i in self._returned}
        self.out_strides = {_OUT_NAMES[i]: stem_stride * 2**i for i in self._returned}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x [B, 3, H, W]`` -> ``{"res{i+2}": [B, C_i, H_i, W_i]}`` for the output stages."""
        x = self.patch_embed(x)
        outs: dict[str, Tensor] = {}
        for i, stage in enumerate(self.layers):
            stage_out, x = stage(x)
            if i in self._returned:
                normed = getattr(self, f"norm{i}")(stage_out)
                outs[_OUT_NAMES[i]] = normed.permute(0, 3, 1, 2).contiguous()
        return outs


def build_focalnet(cfg: Mapping[str, Any]) -> FocalNet:
    """Build the ``focal``/``focal_dw`` backbone from an official SEEM config dict.

    Reads ``cfg["MODEL"]["BACKBONE"]["NAME"]`` and the ``FOCAL`` fields the official backbone
    reads (``SCALING_MODULATOR`` defaults to False when absent, as officially). Every stage in
    ``OUT_INDICES`` gets an output norm; those also named in ``OUT_FEATURES`` are returned.
    """
    backbone_cfg = cfg["MODEL"]["BACKBONE"]
    focal = backbone_cfg["FOCAL"]
    return FocalNet(
        variant=backbone_cfg["NAME"],
        patch_size=focal["PATCH_SIZE"],
        embed_dim=focal["EMBED_DIM"],
        depths=focal["DEPTHS"],
        mlp_ratio=focal["MLP_RATIO"],
        patch_norm=focal["PATCH_NORM"],
        out_indices=focal["OUT_INDICES"],
        out_features=focal["OUT_FEATURES"],
        focal_levels=focal["FOCAL_LEVELS"],
        focal_windows=focal["FOCAL_WINDOWS"],
        use_conv_embed=focal["USE_CONV_EMBED"],
        use_postln=focal["USE_POSTLN"],
        use_postln_in_modulation=focal["USE_POSTLN_IN_MODULATION"],
        scaling_modulator=focal.get("SCALING_MODULATOR", False),
        use_layerscale=focal["USE_LAYERSCALE"],
    )
