"""Distractor shapes of the peak data set: hand-drawn-style letters and digits, lines, polygons, curves, scribbles."""
from __future__ import annotations

import numpy as np

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
