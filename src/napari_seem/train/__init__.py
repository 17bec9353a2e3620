"""Train or fine-tune SEEM: synthetic microscopy or a folder of user annotations.

``python -m napari_seem.train`` reproduces the shipped ``seem_tiny_synthetic`` weights;
``python -m napari_seem.train --fine-tune CHECKPOINT --data FOLDER`` adapts any checkpoint
(official or shipped) to a user's images + label images. See ``python -m napari_seem.train -h``.
"""
from .data import VOCABULARY, FolderDataset, Sample, from_synthetic, synthetic_sample
from .loop import TrainConfig, export, new_model, train
from .objective import ObjectiveConfig, TextBank, training_step

__all__ = [
    "VOCABULARY", "FolderDataset", "Sample", "from_synthetic", "synthetic_sample",
    "TrainConfig", "ObjectiveConfig", "TextBank", "training_step", "train", "export", "new_model",
]
