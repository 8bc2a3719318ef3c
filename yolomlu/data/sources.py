"""Images to run detection on: one file or a folder of them (task=detect)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .coco import DataError, read_image

__all__ = ["IMAGE_EXTENSIONS", "iter_images", "list_images"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(source: str | Path) -> list[Path]:
    """The image files ``source`` names: itself if it is a file, else the folder's image files (by
    extension, case-insensitive, not recursive), sorted by name. Raises DataError naming the path if
    it does not exist or holds no image."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"image source not found: {path} is neither a file nor a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no images in {path} (looked for extensions {', '.join(IMAGE_EXTENSIONS)})")
    return files


def iter_images(source: str | Path) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (path, uint8 [H, W, 3] RGB image) for each image of ``source`` (see ``list_images``), one at
    a time. A missing or empty source raises DataError at the call; an unreadable file raises DataError
    naming it when it is reached."""
    files = list_images(source)  # eager, so a bad source fails at the call, not at the first next()
    return _read_each(files)


def _read_each(files: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    for path in files:
        yield path, read_image(path)
