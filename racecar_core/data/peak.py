"""The "peak" data set: a bright blob near the top-left (class 0) or bottom-right (class 1), plus one distractor.

Images are drawn with PIL at 4x supersampling; the blob profile is the one measured on the official images.
The distractor of each image comes from a sampler that never sees the class, so the class changes only the blob.
Run ``python -m racecar_core.data.peak --seed 0`` to write the folder ``<data_dir>/peak/seed0/<class>/<i>.png``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from racecar_core.data import ImageSet, MissingDataError
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


# Hand-drawn-style glyph templates in a unit box (x right, y down). "L x y x y ..." adds points to the current
# stroke, "A cx cy rx ry a0 a1" adds an elliptic arc (degrees, 90 = down), ";" starts a new stroke.
GLYPHS = {
    "a": "A .42 .62 .24 .26 0 360; L .68 .35 .68 .92", "b": "L .3 .05 .3 .92; A .5 .68 .21 .24 0 360",
    "c": "A .52 .6 .28 .3 -40 -320", "d": "A .45 .66 .22 .25 0 360; L .68 .05 .68 .92",
    "e": "L .22 .6 .76 .6 A .5 .6 .27 .28 0 -300", "f": "A .62 .22 .16 .16 0 -180 L .46 .95; L .25 .45 .72 .45",
    "g": "A .45 .35 .21 .22 0 360; L .67 .18 .67 .78 A .45 .78 .22 .18 0 160",
    "h": "L .28 .05 .28 .95; L .28 .6 A .5 .6 .22 .22 180 360 L .72 .95",
    "k": "L .3 .05 .3 .95; L .72 .38 .3 .68 .74 .95",
    "n": "L .25 .95 .25 .35; L .25 .58 A .47 .58 .22 .22 180 360 L .69 .95",
    "m": "L .12 .95 .12 .4; L .12 .58 A .29 .58 .17 .18 180 360 L .46 .95; "
         "L .46 .58 A .63 .58 .17 .18 180 360 L .8 .95",
    "o": "A .5 .62 .26 .28 0 360", "p": "L .3 .35 .3 1; A .5 .52 .2 .2 0 360",
    "q": "A .47 .5 .2 .2 0 360; L .67 .35 .67 1 .8 .9", "r": "L .3 .95 .3 .35; L .3 .6 A .52 .58 .22 .2 180 290",
    "s": "A .5 .4 .2 .16 -20 -270 A .5 .72 .22 .16 -90 160",
    "t": "L .45 .05 .45 .82 A .6 .82 .15 .13 180 90; L .22 .32 .72 .32",
    "u": "L .25 .35 .25 .65 A .46 .65 .21 .25 180 0 L .67 .35 .67 .95", "v": "L .2 .3 .5 .92 .8 .3",
    "w": "L .1 .3 .3 .9 .5 .45 .7 .9 .9 .3", "x": "L .2 .3 .8 .92; L .8 .3 .2 .92",
    "y": "L .2 .3 .5 .7; L .8 .3 .3 1.05",
    "z": "L .2 .3 .8 .3 .2 .9 .82 .9",
    "0": "A .5 .5 .28 .44 0 360", "1": "L .32 .25 .55 .05 .55 .95", "2": "A .5 .3 .26 .24 200 360 L .2 .95 .82 .95",
    "3": "A .5 .28 .24 .22 200 450; A .5 .72 .26 .23 270 520", "4": "L .65 .95 .65 .05 .15 .65 .85 .65",
    "5": "L .75 .05 .3 .05 .27 .45 A .5 .67 .27 .27 225 500", "6": "L .68 .05 .3 .55 A .5 .7 .22 .24 180 540",
    "7": "L .2 .05 .8 .05 .4 .95", "8": "A .5 .28 .2 .22 0 360; A .5 .72 .25 .23 0 360",
    "9": "A .5 .3 .23 .25 0 360; L .73 .3 .62 .95",
}
SHAPE_KINDS = {"letter": .2, "digit": .08, "line": .05, "zigzag": .05, "triangle": .05, "quad": .04,
               "ellipse": .06, "wave": .06, "curve": .06, "scribble": .07, "star": .03, "combo": .25}


def parse_strokes(template: str) -> list[np.ndarray]:
    """Turn a glyph template ("L ..." points, "A cx cy rx ry a0 a1" arcs, ";" between strokes) into polylines."""
    strokes = []
    for part in template.split(";"):
        pts: list[tuple[float, float]] = []
        tokens = part.split()
        i = 0
        while i < len(tokens):
            op, j = tokens[i], i + 1
            while j < len(tokens) and tokens[j] not in ("L", "A"):
                j += 1
            v = [float(t) for t in tokens[i + 1:j]]
            if op == "L":
                pts += list(zip(v[0::2], v[1::2]))
            elif op == "A":
                a = np.deg2rad(np.linspace(v[4], v[5], max(4, int(abs(v[5] - v[4]) / 12))))
                pts += list(zip(v[0] + v[2] * np.cos(a), v[1] + v[3] * np.sin(a)))
            else:
                raise ValueError(f"bad glyph template op {op!r} in {template!r}; use L or A")
            i = j
        strokes.append(np.asarray(pts, dtype=np.float64))
    return strokes


def _wobble(strokes: list[np.ndarray], rng: np.random.Generator, amp: float) -> list[np.ndarray]:
    """Densify polylines and add a smooth random displacement field (hand-drawn look)."""
    f = rng.normal(0, 4.0, size=(2, 2))
    ph = rng.uniform(0, 2 * np.pi, size=2)
    out = []
    for s in strokes:
        dense = [s[0]]
        for a, b in zip(s[:-1], s[1:]):
            k = max(1, int(np.ceil(np.linalg.norm(b - a) / 0.04)))
            dense += list(a + (b - a) * (np.arange(1, k + 1) / k)[:, None])
        d = np.asarray(dense)
        out.append(d + amp * np.sin(d @ f.T + ph))
    return out


def random_shape(rng: np.random.Generator, allow_combo: bool = True) -> tuple[str, list[np.ndarray], bool]:
    """A random class-blind shape in the unit box: (kind, polylines, filled?)."""
    kinds = [k for k in SHAPE_KINDS if allow_combo or k != "combo"]
    p = np.asarray([SHAPE_KINDS[k] for k in kinds])
    kind = str(rng.choice(kinds, p=p / p.sum()))
    filled = False
    if kind == "combo":  # two shapes drawn over each other, like the official "scribbled-over" distractors
        parts = [random_shape(rng, allow_combo=False) for _ in range(2)]
        strokes = []
        for _, part, _ in parts:
            scale = rng.uniform(0.6, 1.0)
            strokes += [s * scale + rng.uniform(0, 1 - scale, 2) for s in part]
        return f"combo:{parts[0][0]}+{parts[1][0]}", strokes, False
    if kind in ("letter", "digit"):
        keys = [k for k in GLYPHS if k.isdigit() == (kind == "digit")]
        key = str(rng.choice(keys))
        kind, strokes = f"{kind}:{key}", parse_strokes(GLYPHS[key])
    elif kind == "line":
        strokes = [np.array([[0.0, 0.5], [1.0, 0.5]])]
    elif kind == "zigzag":
        n = int(rng.integers(3, 7))
        y = 0.5 + rng.uniform(0.15, 0.4, n) * np.where(np.arange(n) % 2, 1, -1)
        strokes = [np.stack([np.linspace(0, 1, n), y], 1)]
    elif kind in ("triangle", "quad"):
        if kind == "triangle":
            pts = rng.uniform(0, 1, (3, 2))
            while abs(np.linalg.det(np.stack([pts[1] - pts[0], pts[2] - pts[0]]))) < 0.15:
                pts = rng.uniform(0, 1, (3, 2))
            filled = bool(rng.random() < 0.3)
        else:
            pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) * [1, rng.uniform(0.4, 1)] + rng.normal(0, 0.08, (4, 2))
        strokes = [np.vstack([pts, pts[:1]])]
    elif kind == "ellipse":
        strokes = parse_strokes(f"A .5 .5 .5 {rng.uniform(0.2, 0.5):.3f} 0 360")
    elif kind == "wave":
        x = np.linspace(0, 1, 40)
        y = 0.5 + rng.uniform(0.1, 0.25) * np.sin(2 * np.pi * rng.uniform(0.75, 2) * x + rng.uniform(0, 2 * np.pi))
        strokes = [np.stack([x, y], 1)]
    elif kind == "curve":
        p = rng.uniform(0, 1, (4, 2))
        t = np.linspace(0, 1, 30)[:, None]
        strokes = [(1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3]]
    elif kind == "scribble":
        h = np.cumsum(rng.normal(0, 0.6, int(rng.integers(30, 70)))) + rng.uniform(0, 2 * np.pi)
        p = np.cumsum(np.stack([np.cos(h), np.sin(h)], 1), 0)
        p = np.convolve(p[:, 0], np.ones(3) / 3, "valid"), np.convolve(p[:, 1], np.ones(3) / 3, "valid")
        p = np.stack(p, 1)
        strokes = [(p - p.min(0)) / max(np.ptp(p, 0).max(), 1e-6)]
    else:  # star
        k = int(rng.integers(3, 5))
        a = rng.uniform(0, np.pi) + np.pi * np.arange(k) / k
        strokes = [0.5 + np.array([[-np.cos(t), -np.sin(t)], [np.cos(t), np.sin(t)]]) / 2 for t in a]
    return kind, _wobble(strokes, rng, amp=0.0 if filled else float(rng.uniform(0.01, 0.035))), filled


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
