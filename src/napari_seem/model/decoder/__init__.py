"""SEEM v1 mask decoder (``sem_seg_head.predictor``)."""
from .cache import DecoderCache
from .outputs import DecoderOutput, DecoderPredictions
from .seem_decoder import SeemDecoder, build_decoder
from .spatial import SpatialPromptTokens

__all__ = [
    "DecoderCache",
    "DecoderOutput",
    "DecoderPredictions",
    "SeemDecoder",
    "SpatialPromptTokens",
    "build_decoder",
]
