"""Synthetic fluorescence microscopy with exact ground truth (numpy + scipy + scikit-image only).

``make_image`` gives one 2D image, ``make_sequence`` a time-lapse or z-stack with object identities
kept across frames; both are deterministic functions of their seed. See ``docs/synthetic_data.md``.
"""
from .image import SyntheticImage, make_image
from .render import CHANNEL_MODES, OpticsConfig
from .scene import CLASS_NAMES, SceneConfig, object_centre, object_table
from .sequences import SequenceConfig, SyntheticSequence, make_sequence

__all__ = [
    "CHANNEL_MODES", "CLASS_NAMES", "OpticsConfig", "SceneConfig", "SequenceConfig", "SyntheticImage",
    "SyntheticSequence", "make_image", "make_sequence", "object_centre", "object_table",
]
