"""Convolution + normalisation building blocks shared by the pixel decoders."""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """Normalisation layer named by the config ``NORM`` field: ``"GN"`` -> GroupNorm(32), ``""`` -> none."""
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm == "":
        return None
    raise ValueError(f"unsupported NORM {norm!r} (expected 'GN' or '')")


def c2_xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2-style Xavier init (uniform, ``a=1``) with a zero bias; only used for fresh weights."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvNorm(nn.Conv2d):
    """``Conv2d`` followed by an optional ``norm`` submodule and an optional activation.

    State-dict names: ``weight``, ``bias`` (if any), ``norm.*`` (if a norm is given).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        padding: int = 0,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.norm = norm
        self.activation = activation
        c2_xavier_fill(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H', W']``."""
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def fpn_lateral_conv(in_channels: int, conv_dim: int, norm: str) -> ConvNorm:
    """1x1 lateral projection of a backbone level (bias only without norm, no activation)."""
    return ConvNorm(in_channels, conv_dim, 1, bias=norm == "", norm=make_norm(norm, conv_dim))


def fpn_output_conv(in_channels: int, conv_dim: int, norm: str) -> ConvNorm:
    """3x3 output conv of an FPN level, followed by norm and ReLU (bias only without norm)."""
    return ConvNorm(
        in_channels,
        conv_dim,
        3,
        padding=1,
        bias=norm == "",
        norm=make_norm(norm, conv_dim),
        activation=F.relu,
    )
