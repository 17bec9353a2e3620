"""Convolution + normalisation building blocks shared by the pixel decoders."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import winograd


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

    def _is_pointwise(self, x: Tensor) -> bool:
        return (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype
            and x.is_contiguous()
            and self.kernel_size == (1, 1)
            and self.stride == (1, 1)
            and self.padding == (0, 0)
            and self.groups == 1
        )

    def _use_winograd(self, x: Tensor) -> bool:
        return (
            winograd.is_enabled()
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32 == self.weight.dtype
            and self.kernel_size == (3, 3)
            and self.stride == (1, 1)
            and self.padding == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and min(self.in_channels, self.out_channels) >= winograd.MIN_CHANNELS
            and x.shape[-2] * x.shape[-1] >= winograd.MIN_PIXELS
        )

    def _conv(self, x: Tensor, reuse_input: bool) -> Tensor:
        if self._is_pointwise(x):
            # a 1x1 convolution is a matrix product over the channels: on the CPU a plain GEMM on
            # the NCHW map is ~2x faster than oneDNN's convolution for these shapes
            b, c, h, w = x.shape
            weight = self.weight.view(self.out_channels, c)
            out = x.new_empty(b, self.out_channels, h * w)
            for i in range(b):  # [K, C] @ [C, HW]: written straight in NCHW order
                if self.bias is None:
                    torch.mm(weight, x[i].view(c, h * w), out=out[i])
                else:
                    torch.addmm(self.bias[:, None], weight, x[i].view(c, h * w), out=out[i])
            return out.view(b, self.out_channels, h, w)
        if not self._use_winograd(x):
            return super().forward(x)
        out = x if reuse_input and self.in_channels == self.out_channels and x.is_contiguous() else None
        return winograd.conv3x3(x, self.weight, self.bias, out=out)

    def forward(self, x: Tensor, reuse_input: bool = False) -> Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H', W']``.

        Large 3x3 convolutions on the CPU in inference run as Winograd ``F(4x4, 3x3)``
        (:mod:`napari_seem.model.winograd`: the same convolution with 4x fewer multiplications).
        With ``reuse_input`` (inference only, the caller no longer needs ``x``) that convolution
        may write its result into ``x``'s memory.
        """
        x = self._conv(x, reuse_input)
        if (isinstance(self.norm, nn.GroupNorm) and not torch.is_grad_enabled()
                and x.dtype == torch.float32 and x.is_contiguous()):
            # in place in inference: one full-size map less at the peak (fp32 only: under GPU
            # autocast the module itself computes its statistics in fp32)
            x = group_norm_(x, self.norm)
        elif self.norm is not None:
            x = self.norm(x)
        if self.activation is F.relu and not torch.is_grad_enabled():
            x = x.relu_()  # in place in inference: one full-size map less at the peak
        elif self.activation is not None:
            x = self.activation(x)
        return x


def group_norm_(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm(x)`` computed in place in ``x`` (contiguous ``[B, C, ...]``), for inference."""
    b, c = x.shape[:2]
    rows = x.view(b * norm.num_groups, -1)
    n = rows.shape[1]
    # two passes, both fast: the mean, then the centred second moment as dot products (Welford's
    # var_mean is 4x slower on CPU; centring first keeps the variance free of cancellation)
    rows.sub_(rows.sum(-1, keepdim=True) / n)
    var = torch.bmm(rows[:, None, :], rows[:, :, None])[:, 0] / n
    rows.mul_((var + norm.eps).rsqrt_())
    if norm.affine:
        shape = (1, c) + (1,) * (x.dim() - 2)
        x.mul_(norm.weight.view(shape)).add_(norm.bias.view(shape))
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
