"""Datasets and image sources, letterbox and its inverse, the synthetic shapes generator.

Imports nothing of ours but ``types``; ``postprocess`` may import ``data.letterbox``, never the reverse.
"""

from .categories import COCO80_NAMES, COCO80_TO_91, category_ids_for_model, class_names_for
from .coco import CocoDataset, DataError, read_image
from .letterbox import LetterboxInfo, boxes_to_letterboxed, boxes_to_original, letterbox
from .preprocess import to_tensor_batch
from .sources import IMAGE_EXTENSIONS, list_images
from .synthetic import SHAPE_CLASSES, dataset_stats, ensure_shapes, generate_shapes

__all__ = [
    "COCO80_NAMES",
    "COCO80_TO_91",
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "CocoDataset",
    "DataError",
    "LetterboxInfo",
    "boxes_to_letterboxed",
    "boxes_to_original",
    "category_ids_for_model",
    "class_names_for",
    "dataset_stats",
    "ensure_shapes",
    "generate_shapes",
    "letterbox",
    "list_images",
    "read_image",
    "to_tensor_batch",
]
