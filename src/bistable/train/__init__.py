"""Training: the loop, checkpoints, metrics and torchrun/DDP support behind ``bistable train``."""

from .checkpoint import load_checkpoint, save_checkpoint
from .loop import TrainConfig, TrainingDiverged, load_run, train
from .metrics import evaluate, predict_last

__all__ = ["TrainConfig", "TrainingDiverged", "evaluate", "load_checkpoint", "load_run",
           "predict_last", "save_checkpoint", "train"]
