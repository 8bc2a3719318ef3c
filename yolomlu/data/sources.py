"""Images to run detection on: one file or a folder of them (task=detect)."""

from __future__ import annotations

from pathlib import Path

from .coco import DataError

__all__ = ["IMAGE_EXTENSIONS", "list_images"]

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
