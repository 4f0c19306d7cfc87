"""Training the automatic model: the shipped recipe as one call, :func:`train_model` (``python -m lungseg train``)."""

from lungseg.training.recipe import TrainSpec, train_model

__all__ = ["TrainSpec", "train_model"]
