"""Transformer building blocks of the SEEM decoder (post-norm, batch-first).

Parameter names follow the official checkpoints (``self_attn.in_proj_weight``,
``multihead_attn.out_proj.weight``, ``linear1``, ``norm``, ``mask_embed.layers.i`` ...).
All tensors are batch-first: ``[B, N, C]``. Attention masks are boolean with ``True`` meaning
"may NOT attend" and are shared by all heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadAttention(nn.Module):
    """Multi-head attention with packed input projections (``in_proj_weight [3C, C]``).

    A query row whose keys are all masked gets a zero attention output (instead of NaN).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend ``query`` to ``key``/``value``.

        Args:
            query: ``[B, L, C]``.
            key, value: ``[B, S, C]``.
            mask: optional ``[B, L, S]`` bool, True = blocked.

        Returns:
            ``[B, L, C]``.
        """
        return self.attend(query, *self.project_memory(key, value), mask)

    def project_memory(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Key/value input projections, split into heads: ``[B, S, C]`` -> ``[B, h, S, C/h]`` each.

        They depend only on the attended sequence, so they can be computed once and reused by
        :meth:`attend` for any number of queries.
        """
        b, c = key.shape[0], self.embed_dim
        h, d = self.num_heads, c // self.num_heads
        _, w_k, w_v = self.in_proj_weight.chunk(3)
        _, b_k, b_v = self.in_proj_bias.chunk(3)
        k = F.linear(key, w_k, b_k).view(b, -1, h, d).transpose(1, 2).contiguous()
        v = F.linear(value, w_v, b_v).view(b, -1, h, d).transpose(1, 2).contiguous()
        return k, v

    def attend(self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend ``query [B, L, C]`` to projected ``k, v [B, h, S, C/h]`` (:meth:`project_memory`).

        ``mask``: optional ``[B, L, S]`` bool, True = blocked. Returns ``[B, L, C]``.
        """
        b, length, c = query.shape
        h, d = self.num_heads, c // self.num_heads
        w_q = self.in_proj_weight[:c]
        b_q = self.in_proj_bias[:c]
        q = F.linear(query, w_q, b_q).view(b, length, h, d).transpose(1, 2)
        allowed = None if mask is None else ~mask[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [B, h, L, C/h]
        out = out.nan_to_num().transpose(1, 2).reshape(b, length, c)  # fully blocked rows -> 0
        return self.out_proj(out)


class SelfAttentionLayer(nn.Module):
    """``x = norm(x + attn(x + pos, x + pos, x))`` (post-norm)."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor | None = None, rows: Tensor | None = None) -> Tensor:
        """x, pos: ``[B, N, C]``; mask: ``[B, N, N]`` bool (True = blocked).

        ``rows``: optional ``[R]`` int64 indices of the entries whose output is wanted (all
        entries are still attended to); the result is then ``[B, R, C]`` instead of ``[B, N, C]``.
        """
        qk = x + pos
        if rows is None:
            return self.norm(x + self.self_attn(qk, qk, x, mask))
        mask = None if mask is None else mask[:, rows]
        return self.norm(x[:, rows] + self.self_attn(qk[:, rows], qk, x, mask))


class CrossAttentionLayer(nn.Module):
    """``x = norm(x + attn(x + pos, memory + memory_pos, memory))`` (post-norm)."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, pos: Tensor, memory: Tensor, memory_pos: Tensor, mask: Tensor | None = None) -> Tensor:
        """x, pos: ``[B, N, C]``; memory, memory_pos: ``[B, S, C]``; mask: ``[B, N, S]`` bool."""
        return self.norm(x + self.multihead_attn(x + pos, memory + memory_pos, memory, mask))

    def project_memory(self, memory: Tensor, memory_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (``memory + memory_pos``) and values (``memory``) projected: ``[B, h, S, C/h]`` each."""
        return self.multihead_attn.project_memory(memory + memory_pos, memory)

    def forward_projected(self, x: Tensor, pos: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """:meth:`forward` with the memory already projected by :meth:`project_memory`."""
        return self.norm(x + self.multihead_attn.attend(x + pos, k, v, mask))


class FFNLayer(nn.Module):
    """``x = norm(x + linear2(relu(linear1(x))))`` (post-norm)."""

    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
