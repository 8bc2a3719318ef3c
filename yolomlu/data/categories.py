"""Model class index <-> dataset category id.

A COCO-trained model predicts 80 dense classes (0..79); COCO annotation files use the paper's sparse
91-id scheme (1..90 with gaps). Any other dataset maps its categories, sorted by id, onto the model's
class indices in order.
"""

from __future__ import annotations

from .coco import DataError

__all__ = ["COCO80_NAMES", "COCO80_TO_91", "category_ids_for_model", "class_names_for"]

# The 80 class names in the order of the model's outputs (index = model class).
COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# COCO category id (91-id scheme) of each model class: the ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83
# were defined in the paper but never annotated.
_UNUSED_91 = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO80_TO_91: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in _UNUSED_91)

_COCO_BY_ID = dict(zip(COCO80_TO_91, COCO80_NAMES))


def _is_coco(categories: list[dict], nc: int) -> bool:
    """True when the dataset uses COCO's category ids for COCO's classes.

    Either all 80 COCO ids are present, or (a COCO subset file) every category is a COCO (id, name)
    pair and the model has COCO's 80 classes. The sorted-order mapping would be wrong for a subset,
    because the model's class indices are fixed by COCO, not by what the file lists.
    """
    ids = {c["id"] for c in categories}
    if ids == set(COCO80_TO_91):
        return True
    return nc == len(COCO80_NAMES) and all(_COCO_BY_ID.get(c["id"]) == c["name"] for c in categories)


def _sorted(categories: list[dict]) -> list[dict]:
    return sorted(categories, key=lambda c: c["id"])


def category_ids_for_model(categories: list[dict], nc: int) -> list[int]:
    """Dataset category id for each model class index.

    categories: the dataset's [{'id': int, 'name': str}, ...] (any order)
    nc:         number of classes the model predicts
    Returns a list whose element i is the category id of model class i: ``COCO80_TO_91`` for COCO
    (see ``_is_coco``), else the dataset's ids sorted ascending. Its length is the number of classes that
    have a category (<= nc); model classes beyond it have no category and score nothing.
    Raises DataError when the dataset has more categories than the model has classes.
    """
    if nc < 1:
        raise ValueError(f"nc must be positive, got {nc}")
    if _is_coco(categories, nc):
        if nc < len(COCO80_TO_91):
            raise DataError(
                f"the dataset uses COCO's 80 categories but the model predicts only nc={nc} classes"
            )
        return list(COCO80_TO_91)
    if len(categories) > nc:
        names = ", ".join(str(c["name"]) for c in _sorted(categories)[:10]) + (", ..." if len(categories) > 10 else "")
        raise DataError(
            f"the dataset has {len(categories)} categories ({names}) but the model predicts only nc={nc} classes: "
            f"evaluate a model of at least {len(categories)} classes, or a dataset of at most {nc} categories"
        )
    return [c["id"] for c in _sorted(categories)]


def class_names_for(categories: list[dict], nc: int) -> list[str]:
    """Name of each of the model's ``nc`` classes, in class-index order.

    COCO datasets get ``COCO80_NAMES``; other datasets their category names sorted by id. Classes with no
    category (nc larger than the dataset) are named ``class<i>``. Raises DataError like
    ``category_ids_for_model``.
    """
    ids = category_ids_for_model(categories, nc)
    if ids == list(COCO80_TO_91) and _is_coco(categories, nc):
        names = list(COCO80_NAMES)
    else:
        by_id = {c["id"]: c["name"] for c in categories}
        names = [by_id[i] for i in ids]
    return names + [f"class{i}" for i in range(len(names), nc)]
