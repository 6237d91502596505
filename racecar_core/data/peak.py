"""The "peak" data set: a bright blob near the top-left (class 0) or bottom-right (class 1), plus one distractor.

Images are drawn with PIL at 4x supersampling; the blob profile is the one measured on the official images.
The distractor of each image comes from a sampler that never sees the class, so the class changes only the blob.
Run ``python -m racecar_core.data.peak --seed 0`` to write the folder ``<data_dir>/peak/seed0/<class>/<i>.png``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from racecar_core.data import ImageSet, MissingDataError
from racecar_core.data.peak_shapes import random_shape
from racecar_core.io import atomic_write, read_json, write_json
from racecar_core.paths import data_dir

SIZE = 28  # image side in pixels
SS = 4  # supersampling factor for antialiasing
GENERATOR_VERSION = 1
META_FILE = "peak.json"
# Blob of class 0 as measured on the official images (6x6, top-left at row 5, col 4, centroid row 7.5, col 6.5);
# class 1 is its vertical mirror with top-left at row 19, col 19 (centroid 21.5, 21.5). Values in 0..255.
BLOB = np.array([[3, 84, 179, 181, 87, 3],
                 [84, 239, 255, 255, 241, 84],
                 [182, 255, 255, 255, 255, 182],
                 [183, 255, 255, 255, 255, 183],
                 [87, 241, 255, 255, 243, 87],
                 [3, 84, 179, 181, 87, 3]], dtype=np.uint8)
BLOB_TOPLEFT = {0: (5, 4), 1: (19, 19)}


def blob_box(cls: int) -> tuple[slice, slice]:
    """(row slice, column slice) of the 6x6 blob region of class ``cls``."""
    r, c = BLOB_TOPLEFT[int(cls)]
    return slice(r, r + BLOB.shape[0]), slice(c, c + BLOB.shape[1])


def blob_image(cls: int) -> np.ndarray:
    """A black 28x28 uint8 image holding only the blob of class ``cls``."""
    img = np.zeros((SIZE, SIZE), np.uint8)
    img[blob_box(cls)] = BLOB if int(cls) == 0 else BLOB[::-1]
    return img


@dataclass(frozen=True)
class Distractor:
    """One distractor: polylines in pixel coordinates (x, y), a stroke width in pixels, optionally filled."""

    kind: str
    strokes: tuple[np.ndarray, ...]
    width: float
    filled: bool = False


def render_distractor(spec: Distractor) -> np.ndarray:
    """Draw a distractor at 4x, blur slightly and box-downsample: a 28x28 uint8 image."""
    from PIL import Image, ImageDraw, ImageFilter

    canvas = Image.new("L", (SIZE * SS, SIZE * SS), 0)
    draw = ImageDraw.Draw(canvas)
    w = max(1, int(round(spec.width * SS)))
    for stroke in spec.strokes:
        pts = [tuple(p) for p in (np.asarray(stroke, dtype=np.float64) * SS + (SS - 1) / 2).tolist()]
        if spec.filled and len(pts) >= 3:
            draw.polygon(pts, fill=255)
        draw.line(pts, fill=255, width=w, joint="curve")
        for x, y in (pts[0], pts[-1]):  # round caps
            draw.ellipse((x - w / 2, y - w / 2, x + w / 2, y + w / 2), fill=255)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=0.4 * SS))
    return np.asarray(canvas.reduce(SS), dtype=np.uint8).copy()


def render_peak(spec: Distractor, cls: int) -> np.ndarray:
    """One peak image (28x28 uint8): the distractor composited with the blob of class ``cls`` by max()."""
    return np.maximum(render_distractor(spec), blob_image(cls))


MAX_BLOB_OVERLAP = 4.0  # most distractor mass (in full-pixel units) allowed inside either 6x6 blob region


def _touches_blobs(img: np.ndarray) -> bool:
    return any(img[blob_box(c)].sum() / 255.0 > MAX_BLOB_OVERLAP for c in BLOB_TOPLEFT)


def sample_distractor(rng: np.random.Generator, max_tries: int = 60) -> Distractor:
    """Draw a random distractor (class-blind) placed inside the image and away from both blob regions."""
    kind, unit_strokes, filled = random_shape(rng)
    width = float(rng.uniform(1.2, 1.8))
    glyph = kind.startswith(("letter", "digit"))
    size = float(rng.uniform(20.0, 30.0) if glyph or kind.startswith("combo") else rng.uniform(10.0, 25.0))
    theta = np.deg2rad(rng.uniform(-25, 25) if glyph else rng.uniform(0, 360))
    shear, aspect = rng.uniform(-0.3, 0.3), rng.uniform(0.75, 1.3)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    lin = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([aspect, 1 / aspect]) * size
    shape = [(np.asarray(s) - 0.5) @ lin.T for s in unit_strokes]
    spec = Distractor(kind, tuple(shape), width, filled)
    for attempt in range(max_tries):
        span = np.ptp(np.concatenate(shape), 0).max()
        if span > SIZE - 4 or attempt >= max_tries // 2:  # too big, or hard to place: shrink, then place
            shape = [s * min(0.97, 0.98 * (SIZE - 4) / max(span, 1e-6)) for s in shape]
        pts = np.concatenate(shape)
        lo, hi = pts.min(0), pts.max(0)
        offset = rng.uniform(1.5 - lo, SIZE - 2.5 - hi)
        spec = Distractor(kind, tuple(s + offset for s in shape), width, filled)
        if not _touches_blobs(render_distractor(spec)):
            return spec
    # fallback (rare): shrink to 6 px and centre it, far from both blob regions
    pts = np.concatenate(shape)
    scale = 6.0 / max(np.ptp(pts, 0).max(), 1e-6)
    centre = (pts.min(0) + pts.max(0)) / 2
    return Distractor(kind, tuple((s - centre) * scale + SIZE / 2 for s in shape), width, filled)


def _generate(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    out = []
    for split, n in ((0, n_train), (1, n_test)):
        xs, ys = [], []
        for cls in (0, 1):
            for j in range(n):  # distractor k of an interleaved sequence; the sampler never sees cls
                rng = np.random.default_rng([int(seed), split, 2 * j + cls])
                xs.append(render_peak(sample_distractor(rng), cls))
                ys.append(cls)
        out += [np.stack(xs) if xs else np.zeros((0, SIZE, SIZE), np.uint8), np.asarray(ys, np.int64)]
    return tuple(out)


def _to_imageset(xtr, ytr, xte, yte, source: str) -> ImageSet:
    def _x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, np.float32)).reshape(-1, 1, *np.shape(a)[1:])

    return ImageSet(_x(xtr), torch.as_tensor(ytr, dtype=torch.int64), _x(xte),
                    torch.as_tensor(yte, dtype=torch.int64), source=source, synthetic=True)


def peak_cache_folder(seed: int = 0, n_train_per_class: int = 50, n_test_per_class: int = 5) -> Path:
    """Where ``make_peak`` caches a data set: ``<data_dir>/peak/seed<k>`` (size appended when not 50+5)."""
    default = (n_train_per_class, n_test_per_class) == (50, 5)
    sizes = "" if default else f"_train{n_train_per_class}_test{n_test_per_class}"
    return data_dir() / "peak" / f"seed{seed}{sizes}"


def make_peak(n_train_per_class: int = 50, n_test_per_class: int = 5, seed: int = 0,
              cache: bool = True) -> ImageSet:
    """Generate the peak data set (deterministic per seed); cached as PNGs under ``<data_dir>/peak/seed<k>/``."""
    source = (f"peak data set generated by racecar_core (seed {seed}, {n_train_per_class} train + "
              f"{n_test_per_class} test per class, generator v{GENERATOR_VERSION})")
    if not cache:
        return _to_imageset(*_generate(n_train_per_class, n_test_per_class, seed), source=source)
    folder = peak_cache_folder(seed, n_train_per_class, n_test_per_class)
    want = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_train_per_class": n_train_per_class,
            "n_test_per_class": n_test_per_class}
    meta_path = folder / META_FILE
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if any(meta.get(k) != v for k, v in want.items()):
        data = _to_imageset(*_generate(n_train_per_class, n_test_per_class, seed), source=source)
        write_peak_folder(data, folder, extra_meta=want)
    data = load_peak_folder(folder, n_train_per_class=n_train_per_class)
    data.source = f"{source}, cached in {folder}"
    return data


def write_peak_folder(imageset: ImageSet, folder: str | Path, extra_meta: dict | None = None) -> Path:
    """Write ``<folder>/<class>/<i>.png`` (8-bit grayscale; train images first, then test), each file atomically."""
    from PIL import Image

    folder = Path(folder)
    counts: dict[int, list[int]] = {}
    for split, (x, y) in enumerate(((imageset.x_train, imageset.y_train), (imageset.x_test, imageset.y_test))):
        arr = x.detach().cpu().numpy().reshape(len(x), *x.shape[-2:])
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("peak images must be raw pixel values in 0..255; undo any normalisation first")
        arr = np.rint(arr).astype(np.uint8)
        for img, label in zip(arr, y.tolist()):
            n = counts.setdefault(int(label), [0, 0])
            path = folder / str(int(label)) / f"{n[0] + n[1]}.png"
            atomic_write(path, lambda tmp, im=img: Image.fromarray(im, mode="L").save(tmp, format="PNG"))
            n[split] += 1
    meta = {"images_per_class": {c: {"train": n[0], "test": n[1]} for c, n in sorted(counts.items())},
            "source": imageset.source, **(extra_meta or {})}
    write_json(folder / META_FILE, meta)  # written last: marks the folder complete
    return folder


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("L", "P", "I", "I;16", "1", "F"):
            return np.asarray(im.convert("L"), dtype=np.uint8)
        return np.asarray(im, dtype=np.uint8)[..., 0]  # RGB/RGBA/LA with equal channels: take the first


def load_peak_folder(folder: str | Path, n_train_per_class: int = 50) -> ImageSet:
    """Read ``<folder>/<class>/<i>.png`` (grayscale or official RGBA); the first ``n_train_per_class`` are train."""
    folder = Path(folder)
    class_dirs = sorted((d for d in folder.glob("*") if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if not class_dirs:
        raise MissingDataError(f"no class folders (0/, 1/, ...) with PNGs in {folder}; generate the peak data "
                               f"with `python -m racecar_core.data.peak --seed 0` (or `make data-peak`)")
    parts: list[list] = [[], [], [], []]
    for d in class_dirs:
        idx = sorted(int(p.stem) for p in d.glob("*.png") if p.stem.isdigit())
        if idx != list(range(len(idx))):
            missing = sorted(set(range(max(idx, default=-1) + 1)) - set(idx))
            raise MissingDataError(f"{d} is missing images {missing[:10]}; regenerate the folder")
        if len(idx) < n_train_per_class:
            raise ValueError(f"{d} has {len(idx)} images but n_train_per_class={n_train_per_class}; lower it")
        imgs = [_read_png(d / f"{i}.png") for i in idx]
        cls = int(d.name)
        parts[0] += imgs[:n_train_per_class]
        parts[1] += [cls] * n_train_per_class
        parts[2] += imgs[n_train_per_class:]
        parts[3] += [cls] * (len(imgs) - n_train_per_class)
    meta_path = folder / META_FILE
    source = read_json(meta_path).get("source", "") if meta_path.is_file() else ""
    source = f"{source + ', ' if source else 'peak data set '}loaded from {folder}"
    empty = np.zeros((0, SIZE, SIZE), np.uint8)
    return _to_imageset(np.stack(parts[0]) if parts[0] else empty, parts[1],
                        np.stack(parts[2]) if parts[2] else empty, parts[3], source=source)


def check_available() -> tuple[bool, str]:
    """Availability check for the registry: peak is generated offline (needs Pillow)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False, "peak: needs Pillow to generate (pip install pillow), then `python -m racecar_core.data.peak`"
    return True, f"peak: generated offline on first use (cached in {data_dir() / 'peak'})"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate the peak data set folder for a seed and print where it is."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=50, help="train images per class")
    ap.add_argument("--n-test", type=int, default=5, help="test images per class")
    ap.add_argument("--out", default=None, help="write here instead of <data_dir>/peak/seed<k>")
    args = ap.parse_args(argv)
    if args.out:
        data = make_peak(args.n_train, args.n_test, args.seed, cache=False)
        folder = write_peak_folder(data, args.out, extra_meta={"seed": args.seed})
    else:
        data = make_peak(args.n_train, args.n_test, args.seed)
        folder = peak_cache_folder(args.seed, args.n_train, args.n_test)
    print(f"peak data set (seed {args.seed}): {len(data.x_train)} train / {len(data.x_test)} test images in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
