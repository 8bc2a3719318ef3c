"""Training: YOLOv5 target assignment and loss, an augmenting loader, and the training loop.

Imported only by ``task=train`` (and tests); nothing here runs at import time.
"""

from yolomlu.train.dataset import Augment, TrainSet, collate
from yolomlu.train.loss import LossWeights, YoloLoss, bbox_ciou
from yolomlu.train.targets import LevelTargets, build_targets
from yolomlu.train.trainer import (
    EVAL_NMS,
    ModelEMA,
    TrainResult,
    TrainSettings,
    evaluate_model,
    param_groups,
    settings_dict,
    train,
)

__all__ = [
    "EVAL_NMS",
    "Augment",
    "LevelTargets",
    "LossWeights",
    "ModelEMA",
    "TrainResult",
    "TrainSet",
    "TrainSettings",
    "YoloLoss",
    "bbox_ciou",
    "build_targets",
    "collate",
    "evaluate_model",
    "param_groups",
    "settings_dict",
    "train",
]
