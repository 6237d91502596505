"""The "peak" data set: a bright blob near the top-left (class 0) or bottom-right (class 1), plus one distractor.

Images are drawn with PIL at 4x supersampling; the blob profile is the one measured on the official images.
The distractor of each image comes from a sampler that never sees the class, so the class changes only the blob.
Run ``python -m racecar_repro.data.peak --seed 0`` to write the folder ``<data_dir>/peak/seed0/<class>/<i>.png``.

Generator v2 is calibrated against the official images (``image_statistics``, ``scripts/peak_statistics.py``);
the numbers, and what it leaves unmatched by design, are in docs/data.md.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from racecar_repro.data import ImageSet, MissingDataError
from racecar_repro.data.peak_shapes import random_shape
from racecar_core.files import atomic_write, read_json, write_json
from racecar_repro.paths import data_dir

SIZE = 28  # image side in pixels
SS = 4  # supersampling factor for antialiasing
GENERATOR_VERSION = 2
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
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=BLUR * SS))
    return np.asarray(canvas.reduce(SS), dtype=np.uint8).copy()


def render_peak(spec: Distractor, cls: int) -> np.ndarray:
    """One peak image (28x28 uint8): the distractor composited with the blob of class ``cls`` by max()."""
    return np.maximum(render_distractor(spec), blob_image(cls))


# Distractor design, calibrated on the official images (see docs/data.md and scripts/peak_statistics.py).
STROKE_WIDTH = (1.3, 1.7)  # pen width in pixels (= ink per unit length; the official strokes carry 1.5)
BLUR = 0.5  # Gaussian blur sigma in pixels before the 4x box downsampling: the official cross-section profile
GLYPH_SPAN = (14.0, 30.0)  # longer side of the polyline box (pixels) of letters, digits and combos
SHAPE_SPAN = (10.0, 30.0)  # ... of the other shapes (extent and ink quantiles of the official distractors)
BORDER = 1.0  # polylines may reach this far past the image edge (official strokes often run off it)
PLACEMENT_BETA = 12.0  # the shape's box sits at Beta(a, a) of its free range per axis: a > 1 pulls it to the centre
MAX_BLOB_OVERLAP = 12.0  # most distractor ink (full-pixel units) allowed inside either 6x6 blob region


def _touches_blobs(img: np.ndarray) -> bool:
    return max(float(img[blob_box(c)].sum()) / 255.0 for c in BLOB_TOPLEFT) > MAX_BLOB_OVERLAP


def sample_distractor(rng: np.random.Generator, max_tries: int = 60) -> Distractor:
    """Draw a random distractor (class-blind): a shape of random kind, size and pen, placed mostly centrally.
    Placements putting more than ``MAX_BLOB_OVERLAP`` of ink into either blob region (both count alike) are redrawn;
    after ``max_tries // 2`` tries the shape shrinks each try."""
    kind, unit_strokes, filled = random_shape(rng)
    width = float(rng.uniform(*STROKE_WIDTH))
    glyph = kind.startswith(("letter", "digit", "combo"))
    span = float(rng.uniform(*(GLYPH_SPAN if glyph else SHAPE_SPAN)))
    theta = np.deg2rad(rng.uniform(-25, 25) if glyph else rng.uniform(0, 360))
    shear, aspect = rng.uniform(-0.3, 0.3), rng.uniform(0.75, 1.3)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    lin = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([aspect, 1 / aspect])
    shape = [(np.asarray(s) - 0.5) @ lin.T for s in unit_strokes]
    shape = [s * (span / max(np.ptp(np.concatenate(shape), 0).max(), 1e-6)) for s in shape]
    spec = Distractor(kind, tuple(shape), width, filled)
    lo_edge, hi_edge = -BORDER, SIZE - 1 + BORDER
    for attempt in range(max_tries):
        if attempt >= max_tries // 2:  # hard to place: shrink
            shape = [s * 0.97 for s in shape]
        pts = np.concatenate(shape)
        lo, hi = pts.min(0), pts.max(0)
        a, b = np.minimum(lo_edge - lo, hi_edge - hi), np.maximum(lo_edge - lo, hi_edge - hi)
        offset = a + (b - a) * rng.beta(PLACEMENT_BETA, PLACEMENT_BETA, 2)
        spec = Distractor(kind, tuple(s + offset for s in shape), width, filled)
        if not _touches_blobs(render_distractor(spec)):
            return spec
    # fallback (rare): shrink to 6 px and centre it, far from both blob regions
    pts = np.concatenate(shape)
    scale = 6.0 / max(np.ptp(pts, 0).max(), 1e-6)
    centre = (pts.min(0) + pts.max(0)) / 2
    return Distractor(kind, tuple((s - centre) * scale + SIZE / 2 for s in shape), width, filled)


def _generate(n_train: int, n_test: int, seed: int) -> tuple[list, ...]:
    out = []
    for split, n in ((0, n_train), (1, n_test)):
        xs, ys = [], []
        for cls in (0, 1):
            for j in range(n):  # distractor k of an interleaved sequence; the sampler never sees cls
                rng = np.random.default_rng([int(seed), split, 2 * j + cls])
                xs.append(render_peak(sample_distractor(rng), cls))
                ys.append(cls)
        out += [xs, ys]
    return tuple(out)


def _to_imageset(xtr: list, ytr: list, xte: list, yte: list, source: str) -> ImageSet:
    """Lists of 28x28 images (0..255) and of their classes as an ImageSet: float32 ``[N,1,28,28]``, int64 labels."""
    xtr, xte = (torch.from_numpy(np.stack(x).astype(np.float32) if x else np.zeros((0, SIZE, SIZE), np.float32))
                .unsqueeze(1) for x in (xtr, xte))
    ytr, yte = (torch.as_tensor(y, dtype=torch.int64) for y in (ytr, yte))
    return ImageSet(xtr, ytr, xte, yte, source=source, synthetic=True)


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


def read_png(path: Path) -> np.ndarray:
    """A PNG as a uint8 grey image: grey as it is, RGB(A) with equal channels (the official peak images) channel 0."""
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
                               f"with `python -m racecar_repro.data.peak --seed 0` (or `make data-peak`)")
    xtr, ytr, xte, yte = [], [], [], []
    for d in class_dirs:
        idx = sorted(int(p.stem) for p in d.glob("*.png") if p.stem.isdigit())
        if idx != list(range(len(idx))):
            missing = sorted(set(range(max(idx, default=-1) + 1)) - set(idx))
            raise MissingDataError(f"{d} is missing images {missing[:10]}; regenerate the folder")
        if len(idx) < n_train_per_class:
            raise ValueError(f"{d} has {len(idx)} images but n_train_per_class={n_train_per_class}; lower it")
        imgs = [read_png(d / f"{i}.png") for i in idx]
        xtr += imgs[:n_train_per_class]
        xte += imgs[n_train_per_class:]
        ytr += [int(d.name)] * n_train_per_class
        yte += [int(d.name)] * (len(idx) - n_train_per_class)
    meta_path = folder / META_FILE
    source = read_json(meta_path).get("source", "") if meta_path.is_file() else ""
    source = f"{source + ', ' if source else 'peak data set '}loaded from {folder}"
    return _to_imageset(xtr, ytr, xte, yte, source=source)


# ---------------------------------------------------------------- statistics (replica vs official)

ON_LEVEL = 127  # a pixel above this is "on" (stroke coverage)
FAINT_LEVEL = 16  # a pixel above this is part of a stroke's faint rim
BLOB_CENTRE = {0: (7.5, 6.5), 1: (21.5, 21.5)}  # (row, col) of the blob centroids
CONTACT_RADIUS = 4.5  # a distractor this close to the own blob centre touches the blob (its radius is about 3)


def _run_lengths(on: np.ndarray) -> np.ndarray:
    """For each True pixel of ``on`` [N,H,W]: the length of the run of True pixels along its row that it is in."""
    n, h, w = on.shape
    seq = np.zeros((n, h, w + 1), bool)
    seq[..., :w] = on
    seq = seq.reshape(-1)
    start = seq & ~np.concatenate([[False], seq[:-1]])
    ids = np.cumsum(start) * seq
    return np.bincount(ids)[ids].reshape(n, h, w + 1)[..., :w] * on


def _mean_abs_cosine(flat: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean |cosine| over the pairs (i != j) of rows of ``flat`` (only the pairs where ``mask`` is True)."""
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    u = flat / np.maximum(norm, 1e-12)
    cos = np.abs(u @ u.T)
    pairs = ~np.eye(len(flat), dtype=bool) if mask is None else mask & ~np.eye(len(flat), dtype=bool)
    return float(cos[pairs].mean()) if pairs.any() else float("nan")


def image_statistics(x, labels=None) -> dict[str, float]:
    """Summary statistics of peak images ``x`` (``[N,(1,)28,28]``, 0..255), to compare the replica with the official.

    ``labels`` (0/1) default to the class whose blob is intact (the heavier blob box when both or neither are: an
    official image's distractor puts more ink into the other box). "Distractor": everything outside the two 6x6 blob
    boxes; masses in full-pixel units (sum / 255); "on": > 127, "faint": > 16. Keys, means over the images:

    * ``mean_intensity``, ``coverage_on`` / ``_faint`` / ``_nonzero`` (pixel fractions), ``on_pixels``, ``max``;
    * ``distractor_mass``, ``distractor_on_pixels``, ``distractor_faint_per_mass`` (high for long thin strokes, low
      for clumped scribbles), ``distractor_extent`` (longer side of its faint pixels' box), ``distractor_radius``
      (radius of gyration), ``border_touch`` (reaches the outermost rows or columns), ``distractor_dist_own_blob``
      (its centroid to the own blob centre), ``own_blob_contact`` (a pixel > 16 above the blob image within
      ``CONTACT_RADIUS`` of the own blob centre);
    * ``blob_profile_0``/``_1`` (own blob box over ``BLOB``, 1 = untouched), ``own_box_excess`` (mass above the blob
      in the own box), ``other_box_mass``, ``blob_energy_fraction`` (share of the squared norm in the own box);
    * ``run_length`` (of on-pixel runs along rows and columns, distractor only) and ``stroke_width`` (per distractor
      on-pixel h*v/sqrt(h^2+v^2) of its row run h and column run v: a straight stroke's width in any direction);
    * ``spectrum_top1/2/5/10``: share of the squared Frobenius norm of the uncentred [N, 784] data matrix in its top
      1/2/5/10 singular values (``distractor_spectrum_top*``: with the blob boxes zeroed);
    * ``mean_pairwise_cos`` (mean |cosine| between two images), ``cos_within_class``, ``cos_between_class``,
      ``distractor_pairwise_cos`` (between the distractor parts).
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64).reshape(-1, SIZE, SIZE)
    n = len(x)
    if n == 0:
        raise ValueError("image_statistics needs at least one image")
    boxes = {c: blob_box(c) for c in BLOB_TOPLEFT}
    box_mass = np.stack([x[:, b[0], b[1]].sum((1, 2)) / 255.0 for b in boxes.values()], 1)
    if labels is None:  # the class whose blob is intact (never dimmed); the heavier box if both or neither are
        intact = np.stack([(x[:, b[0], b[1]] >= blob_image(c)[b] - 0.5).all((1, 2)) for c, b in boxes.items()], 1)
        labels = np.where(intact[:, 0] != intact[:, 1], intact[:, 1], box_mass[:, 1] > box_mass[:, 0])
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(y) != n or not np.isin(y, list(BLOB_TOPLEFT)).all():
        raise ValueError(f"labels must be {n} classes in {sorted(BLOB_TOPLEFT)}")
    outside = np.ones((SIZE, SIZE), bool)
    for b in boxes.values():
        outside[b] = False
    dis = x * outside
    on, faint = x > ON_LEVEL, x > FAINT_LEVEL
    st: dict[str, float] = {"n_images": n, "mean_intensity": x.mean(), "coverage_on": on.mean(),
                            "coverage_faint": faint.mean(), "coverage_nonzero": (x > 0).mean(),
                            "on_pixels": on.sum((1, 2)).mean(), "max": x.max((1, 2)).mean()}
    mass = dis.sum((1, 2)) / 255.0
    dfaint = faint & outside
    st["distractor_mass"] = mass.mean()
    st["distractor_on_pixels"] = (on & outside).sum((1, 2)).mean()
    st["distractor_faint_per_mass"] = dfaint.sum() / max(mass.sum(), 1e-12)
    extent = [max(np.ptp(r), np.ptp(c)) + 1 if len(r) else 0 for r, c in (np.nonzero(f) for f in dfaint)]
    st["distractor_extent"] = float(np.mean(extent))
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    m = np.maximum(dis.sum((1, 2)), 1e-12)
    cr, cc = (dis * rows).sum((1, 2)) / m, (dis * cols).sum((1, 2)) / m
    radius = np.sqrt((dis * ((rows - cr[:, None, None]) ** 2 + (cols - cc[:, None, None]) ** 2)).sum((1, 2)) / m)
    has = mass > 0  # images with a distractor: the only ones with a distractor centroid
    st["distractor_radius"] = radius[has].mean() if has.any() else float("nan")
    edge = np.concatenate([dfaint[:, 0], dfaint[:, -1], dfaint[:, :, 0], dfaint[:, :, -1]], 1)
    st["border_touch"] = edge.any(1).mean()
    centre = np.array([BLOB_CENTRE[int(c)] for c in y])
    dist = np.hypot(cr - centre[:, 0], cc - centre[:, 1])
    st["distractor_dist_own_blob"] = dist[has].mean() if has.any() else float("nan")
    near = np.hypot(rows[None] - centre[:, 0, None, None], cols[None] - centre[:, 1, None, None]) <= CONTACT_RADIUS
    above_blob = x - np.stack([blob_image(int(c)) for c in y]).astype(np.float64) > FAINT_LEVEL
    st["own_blob_contact"] = (above_blob & near).any((1, 2)).mean()
    for c, b in boxes.items():
        ref = blob_image(c)[b].astype(np.float64)
        st[f"blob_profile_{c}"] = x[y == c][:, b[0], b[1]].mean() / ref.mean() if (y == c).any() else float("nan")
    own, other = box_mass[np.arange(n), y], box_mass[np.arange(n), 1 - y]
    st["own_box_excess"] = (own - BLOB.sum() / 255.0).mean()
    st["other_box_mass"] = other.mean()
    energy = (x ** 2).sum((1, 2))
    own_energy = np.array([(img[boxes[int(c)]] ** 2).sum() for img, c in zip(x, y)])
    st["blob_energy_fraction"] = (own_energy / np.maximum(energy, 1e-12)).mean()
    don = on & outside
    h, v = _run_lengths(don)[don], _run_lengths(don.transpose(0, 2, 1)).transpose(0, 2, 1)[don]
    st["run_length"] = 0.5 * (h.mean() + v.mean()) if len(h) else float("nan")
    st["stroke_width"] = (h * v / np.sqrt(h ** 2 + v ** 2)).mean() if len(h) else float("nan")
    flat, dflat = x.reshape(n, -1), dis.reshape(n, -1)
    for name, f in (("spectrum", flat), ("distractor_spectrum", dflat)):
        gram = f @ f.T if len(f) <= f.shape[1] else f.T @ f
        sv = np.clip(np.linalg.eigvalsh(gram)[::-1], 0, None)  # squared singular values, cheaper than an SVD
        frac = np.cumsum(sv) / max(sv.sum(), 1e-12)
        for k in (1, 2, 5, 10):
            st[f"{name}_top{k}"] = frac[min(k, len(frac)) - 1]
    same = y[:, None] == y[None, :]
    st["mean_pairwise_cos"] = _mean_abs_cosine(flat)
    st["cos_within_class"] = _mean_abs_cosine(flat, same)
    st["cos_between_class"] = _mean_abs_cosine(flat, ~same)
    st["distractor_pairwise_cos"] = _mean_abs_cosine(dflat)
    return {k: float(v) for k, v in st.items()}


def check_available() -> tuple[bool, str]:
    """Availability check for the registry: peak is generated offline (needs Pillow)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False, "peak: needs Pillow to generate (pip install pillow), then `python -m racecar_repro.data.peak`"
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
