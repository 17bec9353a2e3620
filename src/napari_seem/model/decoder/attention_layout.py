"""Which sequences the SEEM v1 decoder carries and who attends to whom.

The decoder works on up to six named groups of embeddings (all ``[B, N, C]``):

========================  =======================================================  ===============
group                     content                                                  cross-attends
========================  =======================================================  ===============
``queries_object``        the learned object queries (generic segmentation)        image
``queries_grounding``     a copy of the object queries that also reads text        image
``queries_spatial``       per prompted object, ``QUERY_NUMBER`` sampled copies     image
                          of object queries
``tokens_grounding``      text token embeddings of the grounding phrases          --
``tokens_spatial``        image features at the prompt points (+ pos/neg flag)     --
``memories_spatial``      learned memory tokens reading the previous round's mask  previous mask
========================  =======================================================  ===============

Self-attention is allowed only along :data:`ATTENDS_TO`. On top of that:

* padded entries of a group (``Group.padding``) neither attend nor are attended to;
* between two groups that both carry an ``owner`` (the prompted object each entry belongs to:
  spatial queries, spatial tokens, memories), attention is allowed only between entries of the
  same object, so several objects prompted together never mix.

This is the fixed SEEM v1 layout (identical in every official v1 config's ``ATTENTION_ARCH``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

QUERIES_OBJECT = "queries_object"
QUERIES_GROUNDING = "queries_grounding"
QUERIES_SPATIAL = "queries_spatial"
TOKENS_GROUNDING = "tokens_grounding"
TOKENS_SPATIAL = "tokens_spatial"
MEMORIES_SPATIAL = "memories_spatial"

#: groups that cross-attend to image features (in concatenation order)
CROSS_ATTENTION_ORDER = (QUERIES_OBJECT, QUERIES_GROUNDING, QUERIES_SPATIAL, MEMORIES_SPATIAL)
#: groups taking part in self-attention (in concatenation order)
SELF_ATTENTION_ORDER = (
    QUERIES_OBJECT,
    QUERIES_GROUNDING,
    QUERIES_SPATIAL,
    TOKENS_GROUNDING,
    TOKENS_SPATIAL,
    MEMORIES_SPATIAL,
)
#: row group -> the groups it may attend to in self-attention
ATTENDS_TO: dict[str, frozenset[str]] = {
    QUERIES_OBJECT: frozenset({QUERIES_OBJECT}),
    QUERIES_GROUNDING: frozenset({QUERIES_GROUNDING, TOKENS_GROUNDING}),
    QUERIES_SPATIAL: frozenset({QUERIES_SPATIAL, TOKENS_SPATIAL, MEMORIES_SPATIAL}),
    TOKENS_GROUNDING: frozenset({QUERIES_GROUNDING, TOKENS_GROUNDING}),
    TOKENS_SPATIAL: frozenset({TOKENS_SPATIAL}),
    MEMORIES_SPATIAL: frozenset({MEMORIES_SPATIAL}),
}


@dataclass
class Group:
    """One named sequence of decoder embeddings.

    Attributes:
        output: ``[B, N, C]`` content, updated by every attention/FFN step it takes part in.
        pos: ``[B, N, C]`` positional embedding added to queries/keys (fixed).
        owner: optional ``[B, N]`` int64 object index of each entry (spatial groups).
        padding: optional ``[B, N]`` bool, True on padded entries.
    """

    output: Tensor
    pos: Tensor
    owner: Tensor | None = None
    padding: Tensor | None = None


class AttentionLayout:
    """The groups present in one decoder forward, with concatenation helpers."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.groups

    def __getitem__(self, name: str) -> Group:
        return self.groups[name]

    def __setitem__(self, name: str, group: Group) -> None:
        self.groups[name] = group

    def present(self, order: tuple[str, ...]) -> list[str]:
        """Names of ``order`` that are present, in that order."""
        return [n for n in order if n in self.groups]

    def gather(self, names: list[str]) -> tuple[Tensor, Tensor]:
        """Concatenate ``output`` and ``pos`` of ``names`` along the sequence axis -> ``[B, N, C]``."""
        output = torch.cat([self.groups[n].output for n in names], dim=1)
        pos = torch.cat([self.groups[n].pos for n in names], dim=1)
        return output, pos

    def scatter(self, output: Tensor, names: list[str]) -> None:
        """Split ``[B, N, C]`` back into the ``output`` of ``names`` (inverse of :meth:`gather`)."""
        sizes = [self.groups[n].output.shape[1] for n in names]
        for name, part in zip(names, output.split(sizes, dim=1)):
            self.groups[name].output = part

    def rows(self, names: list[str], subset: list[str]) -> Tensor:
        """``[R]`` int64 positions of the entries of ``subset`` in the concatenation of ``names``."""
        index, start = [], 0
        for name in names:
            n = self.groups[name].output.shape[1]
            if name in subset:
                index.append(torch.arange(start, start + n))
            start += n
        return torch.cat(index).to(self.groups[names[0]].output.device)

    def self_attention_mask(self, names: list[str]) -> Tensor:
        """``[B, N, N]`` bool (True = blocked) for the concatenation of ``names``."""
        groups = [self.groups[n] for n in names]
        b = groups[0].output.shape[0]
        device = groups[0].output.device
        rows = []
        for row_name, row in zip(names, groups):
            blocks = []
            for col_name, col in zip(names, groups):
                shape = (b, row.output.shape[1], col.output.shape[1])
                if col_name not in ATTENDS_TO[row_name]:
                    blocks.append(torch.ones(shape, dtype=torch.bool, device=device))
                    continue
                blocked = torch.zeros(shape, dtype=torch.bool, device=device)
                if row.padding is not None:
                    blocked |= row.padding[:, :, None]
                if col.padding is not None:
                    blocked |= col.padding[:, None, :]
                if row.owner is not None and col.owner is not None:
                    blocked |= row.owner[:, :, None] != col.owner[:, None, :]
                blocks.append(blocked)
            rows.append(torch.cat(blocks, dim=2))
        return torch.cat(rows, dim=1)
