"""Bad image files, through task=evaluate on a COCO folder and through task=detect on a folder.

An unreadable image fails the job that meets it, naming the file and what an image must be; odd but
valid images (16-bit grey, palette, CMYK, alpha, one pixel, a JPEG named .png) decode to their real
pixels and evaluate; task=detect goes past every unreadable image and names them all at the end.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolomlu.data.coco import read_image

from .battery import JOB, coco_folder, finished, image_bytes, random_image, verdict, without

GOOD = random_image(0)
GREY16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21 % 60000 + 2000).astype(np.uint16)


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit grey PNG of any size, a few kilobytes however large: only its
    header says how big it is (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _jpeg() -> bytes:
    return image_bytes(random_image(1), "JPEG", quality=90)


# case -> (suffix, content, what the message must say besides the file)
UNREADABLE = {
    "truncated-jpeg": (".jpg", lambda: _jpeg()[: len(_jpeg()) * 2 // 3], "truncated or corrupt"),
    "empty-file": (".jpg", lambda: b"", "is empty (0 bytes); expected a JPEG, PNG"),
    "text-named-jpg": (".jpg", lambda: b"this is a text file, not a picture\n" * 20, "not an image file PIL can decode"),
    "random-bytes": (".png", lambda: np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image file"),
    "truncated-png": (".png", lambda: image_bytes(random_image(4), "PNG")[:2000], "truncated or corrupt"),
    "png-signature-then-garbage": (".png", lambda: blank_png(64, 48)[:16] + b"\x00" * 64, "not an image file"),
    "huge-9000x9000": (".png", lambda: blank_png(9000, 9000), "is 9000x9000 (81 megapixels): larger than the 64 megapixels"),
    "bomb-20000x20000": (".png", lambda: blank_png(20000, 20000), "is 400 megapixels: larger than the 64 megapixels"),
}

# case -> (suffix, content, the decoded image [h, w, 3] it must give): odd but valid images.
_PALETTE = Image.fromarray(random_image(2)).convert("P", palette=Image.ADAPTIVE)
_CMYK = Image.fromarray(random_image(2)).convert("CMYK")
READABLE = {
    "grey-16bit-png": (".png", lambda: image_bytes(GREY16, "PNG"), lambda: _grey(np.round(GREY16 * (255 / 65535)))),
    "palette-png": (".png", lambda: image_bytes(_PALETTE, "PNG"), lambda: np.asarray(_PALETTE.convert("RGB"))),
    "cmyk-jpeg": (".jpg", lambda: image_bytes(_CMYK, "JPEG", quality=95), lambda: random_image(2)),
    "rgba-png": (".png", lambda: image_bytes(Image.fromarray(random_image(2)).convert("RGBA"), "PNG"), lambda: random_image(2)),
    "one-pixel": (".png", lambda: image_bytes(np.full((1, 1, 3), 200, np.uint8), "PNG"), lambda: np.full((1, 1, 3), 200, np.uint8)),
    "jpeg-named-png": (".png", lambda: _jpeg(), lambda: random_image(1)),
}


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize("case", list(UNREADABLE), ids=list(UNREADABLE))
def test_an_unreadable_image_fails_the_job_naming_the_file(case, run_job, tmp_path: Path) -> None:
    """The bad image comes first, so the job meets it at once (the parity images are read before
    the model is compared with itself)."""
    suffix, content, says = UNREADABLE[case]
    root = coco_folder(tmp_path / "set", {f"a{suffix}": content(), "b.jpg": GOOD})
    outcome = run_job([*JOB, "data=coco", f"data.root={root}"])
    verdict(outcome, status=1, names=[str(root / "images" / f"a{suffix}")], valid=[says], run="FAILED")


@pytest.mark.parametrize("case", list(READABLE), ids=list(READABLE))
def test_an_odd_but_valid_image_decodes_to_its_pixels(case, tmp_path: Path) -> None:
    suffix, content, expected = READABLE[case]
    path = tmp_path / f"odd{suffix}"
    path.write_bytes(content())
    decoded, want = read_image(path), expected()
    assert decoded.dtype == np.uint8 and decoded.shape == want.shape
    tolerance = 4 if suffix == ".jpg" or case == "jpeg-named-png" else 0  # JPEG is lossy
    assert np.abs(decoded.astype(int) - want).mean() <= tolerance


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    path.write_bytes(image_bytes(GREY16, "PNG"))
    decoded = read_image(path)
    assert not (decoded == 255).all()  # PIL's plain conversion would have made it white
    assert (decoded == np.round(GREY16 * (255 / 65535)).astype(np.uint8)[..., None]).all()


def test_a_set_of_odd_but_valid_images_evaluates(run_job, weights_80: Path, tmp_path: Path) -> None:
    """Every odd image of READABLE in one COCO set, evaluated with weights from a file, so that
    accuracy runs and reads every image."""
    files = {"a.jpg": GOOD, **{f"{case}{suffix}": content() for case, (suffix, content, _) in READABLE.items()}}
    root = coco_folder(tmp_path / "set", files)
    run = finished(run_job([*without(JOB, "data.max_images"), f"model.weights={weights_80}", "data=coco", f"data.root={root}"]))
    assert run["tags"]["accuracy"] == "measured" and run["tags"]["eval_images"] == str(len(files)) and "map50_95" in run["metrics"]


def test_detect_goes_past_every_unreadable_image_and_names_them_all(run_command, tmp_path: Path) -> None:
    """The command line: each readable image gets its boxes (a 16-bit one its real pixels), every
    unreadable one is skipped and named in the one error line at the end; detect makes no run."""
    folder = tmp_path / "source"
    folder.mkdir()
    Image.fromarray(GOOD).save(folder / "a_good.jpg")
    for case, (suffix, content, _) in READABLE.items():
        (folder / f"ok_{case}{suffix}").write_bytes(content())
    bad = []
    for case, (suffix, content, _) in UNREADABLE.items():
        bad.append(folder / f"zz_{case}{suffix}")
        bad[-1].write_bytes(content())
    outcome = run_command("task=detect", "model=yolov5n_v5", "img_size=64", f"source={folder}", "detect.conf_thres=1.0")
    verdict(outcome, status=1, names=[str(p) for p in bad], valid=[f"{len(bad)} of {len(bad) + len(READABLE) + 1} images"], run=None)
    assert f"[yolomlu] {len(READABLE) + 1} images, 0 boxes" in outcome.stdout
    # conf 1.0 draws no box: the annotated copy is the decoded image (through JPEG), not a white one.
    annotated = np.asarray(Image.open(tmp_path / "outputs" / "detect" / "ok_grey-16bit-png.jpg").convert("L"), dtype=float)
    expected = np.round(GREY16 * (255 / 65535))
    assert np.abs(annotated - expected).mean() < 3
