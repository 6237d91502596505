"""The reproduction report: a static, offline HTML site built from ``figures/`` and the executed notebooks.

    python scripts/build_report.py [--profile quick] [--out report] [--check]      (make report)

``report/index.html``: one card per figure (thumbnail, caption, profile, data source, SYNTHETIC / subset / replica
labels, the commit that made it), the table "paper vs this companion" with a row for every number the paper gives
(``PAPER_NUMBERS``: the paper's value, ours as mean +- std over the seeds that ran, the verdict here on each claim of
its notebook that the row concerns (verdict, mean paired difference, 95 % interval, n, from ``results.json``'s
``claim``), the data and the profile; "not run" with the command that fetches the data, and "needs CIFAR-10 / ERA5 and a
GPU", where a notebook was skipped), and links to ``report/notebooks/<stem>.html``,
each executed notebook (``build/<profile>/<stem>.ipynb``) rendered as a page. Everything is copied into the folder: no
network, no CDN, nothing outside it referenced. ``--check`` then opens every page in headless Chromium (Debian's
``chromium-headless-shell``; ``make browser`` installs it) through the DevTools protocol and fails unless each page
loads without a console error or failed request, every image has pixels and the table has a row per paper number;
it writes ``report/screenshot.png`` of the index.
"""
from __future__ import annotations

import argparse
import base64
import fnmatch
import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from racecar_repro import verdicts  # noqa: E402
from racecar_repro.experiments.cifar import PAPER_ACCURACY  # noqa: E402
from racecar_repro.experiments.weather import PAPER as PAPER_WEATHER  # noqa: E402
from racecar_repro.provenance import portable  # noqa: E402

Results = dict[str, dict]      # notebook folder name -> its results.json


@dataclass(frozen=True)
class PaperNumber:
    """One number (or stated finding) of the paper and how to read ours from a notebook's ``results.json``."""

    figure: str
    quantity: str
    paper: str
    notebook: str                                   # the notebook stem whose figure folder holds ours
    ours: Callable[[dict], str] | None = None       # results.json -> our value in words; None: not reproduced here
    why_not: str = ""                               # why a number has no counterpart here
    claims: tuple[str, ...] = ()                    # the claims it concerns: keys of results.json's "claim", or
    #                                                 fnmatch patterns of them ("official/*", "*/rr_more_central")


class OldSchema(KeyError):
    """A ``results.json`` written before claims were verdicts (``racecar_repro.verdicts``): re-run its notebook."""


def claims_of(res: dict) -> dict[str, dict]:
    """``res["claim"]`` as ``{name: record}`` (each with verdict, diff, ci, n, ...); ``OldSchema`` when the file has
    no claim or an older kind."""
    claim = res.get("claim")
    if not isinstance(claim, dict) or not claim or not all(isinstance(v, dict) and "verdict" in v
                                                            for v in claim.values()):
        raise OldSchema("no verdicts: written before the verdict schema (re-run its notebook)")
    return claim


def matching(claims: dict[str, dict], patterns: Sequence[str]) -> list[tuple[str, dict]]:
    """The claims whose names match any of ``patterns`` (exact names or fnmatch patterns), in the file's order."""
    return [(k, v) for k, v in claims.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)]


def _num(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:+.{digits}g}"


def verdict_line(name: str, rec: dict) -> str:
    """One claim: ``name: `` and ``racecar_repro.verdicts.text`` of its record (verdict, method - baseline, mean
    paired difference, 95 % t-interval, n, the seeds left out because their run missed the task threshold)."""
    return f"{name}: {verdicts.text(rec)}"


def _seeds(res: dict, method: str) -> list[str]:
    return [k for k in res.get("per_run", {}) if k.split("/")[-2] == method]


def _cifar(method: str) -> Callable[[dict], str]:
    def ours(res: dict) -> str:
        row = next(r for r in res["table"] if r["method"] == method)
        p = res.get("provenance", {}).get("params", {})
        setting = (f"; {p['dataset']}, ResNet-{p['depth']}, {p['epochs']} epochs"
                   if {"dataset", "depth", "epochs"} <= set(p) else "")
        return f"{row['mean']:.3f} +- {row['std']:.3f} ({row['seeds']} seeds{setting})"
    return ours


def _weather_mse(method: str) -> Callable[[dict], str]:
    def ours(res: dict) -> str:
        d = res["summary"][method]["all"]["mse_norm"]
        return f"{d['mean']:.4f} +- {d['std']:.4f} ({len(_seeds(res, method))} seeds)"
    return ours


def _weather_gain(res: dict) -> str:
    gain = claims_of(res)["rr_vs_std"].get("rr_gain_percent")
    return "n/a (Std and RR did not both run)" if gain is None else f"{gain:+.1f} % (means over seeds)"


def _weather_mae(method: str) -> Callable[[dict], str]:
    def ours(res: dict) -> str:
        runs = [v for k, v in res["per_run"].items() if k.split("/")[-2] == method]
        vals = [r["example_mae"] for r in runs]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5
        return f"{mean:.4f} +- {std:.4f} ({len(vals)} seeds; example {runs[0]['example_time']})"
    return ours


SVD_VARIANTS = ("official", "corrected", "corrected_lambda")


def _svd(res: dict) -> str:
    """Per variant (official, corrected, corrected at the lambda where it learns its task): how many singular-vector
    measures are shown, of how many."""
    claims = claims_of(res)
    parts = []
    for variant in SVD_VARIANTS:
        mine = matching(claims, [f"{variant}/*"])
        if mine:
            shown = [k.split("/", 1)[1] for k, v in mine if v["verdict"] == "shown"]
            parts.append(f"{variant}: shown in {len(shown)}/{len(mine)} measures"
                         + (f" ({', '.join(shown)})" if shown else ""))
    seeds = {k.split("/")[-1] for k in res.get("per_run", {})}
    return ("; ".join(parts) or "no singular-vector claim") + f" ({len(seeds)} seeds)"


def _planes(name: str, unit: str = "") -> Callable[[dict], str]:
    """Per estimator (binning, kde): the mean paired difference of claim ``<estimator>/<name>``."""
    def ours(res: dict) -> str:
        mine = matching(claims_of(res), [f"*/{name}"])
        seeds = {k.split("/")[-1] for k in res.get("per_run", {})}
        return ("; ".join(f"{k.split('/')[0]}: {v.get('method', 'RR')} - {v.get('baseline', 'Std')} "
                          f"{v.get('measure', '')} {_num(v.get('diff'), 4)}{unit}" for k, v in mine)
                or f"no claim */{name}") + f" ({len(seeds)} seeds)"
    return ours


def _texture(method: str) -> Callable[[dict], str]:
    """Our Fig. 1a number: the mean probability of the shape's class on the cue-conflict images."""
    def ours(res: dict) -> str:
        row = next((r for r in res.get("table", []) if r["method"] == method), None)
        if row is None:
            return f"no {method} runs"
        data = res.get("provenance", {}).get("params", {}).get("dataset", "")
        return (f"p(shape's class) {row['shape_prob_mean']:.3f} +- {row['shape_prob_std']:.3f} ({row['seeds']} seeds; "
                f"{data} silhouettes with class textures, not the paper's images)")
    return ours


def _gan(res: dict) -> str:
    """Our GAN numbers: each method's Frechet distance in the scoring classifier's features."""
    rows = res.get("table", [])
    if not rows:
        return "no runs"
    data = res.get("provenance", {}).get("params", {}).get("dataset", "")
    return ("Frechet distance in a classifier's features (not Inception's FID): " +
            ", ".join(f"{r['method']} {r['fd_mean']:.2f} +- {r['fd_std']:.2f}" for r in rows) +
            f" ({rows[0]['seeds']} seeds; DCGAN on {data}, not the paper's GAN)")


CIFAR_CLAIMS = {"Std": ("rr_vs_std", "ort_vs_std"), "Ort": ("ort_vs_std", "rr_vs_ort"),
                "RR": ("rr_vs_std", "rr_vs_ort")}   # the claims each method's accuracy enters
PAPER_NUMBERS: list[PaperNumber] = [
    *[PaperNumber("Fig. 1c", f"CIFAR-10 ResNet-110 test accuracy, {m}", f"{v:.3f}", "03_cifar_resnet110", _cifar(m),
                  claims=CIFAR_CLAIMS.get(m, ("rr_vs_std",))) for m, v in PAPER_ACCURACY.items()],
    *[PaperNumber("Fig. 1d", f"72 h forecast, latitude-weighted MSE (normalised), {m}", f"{v:.4f}", "04_weatherbench",
                  _weather_mse(m), claims=("rr_vs_std",)) for m, v in PAPER_WEATHER.items()],
    PaperNumber("Fig. 1d", "RR's gain over Std", "13.7 %", "04_weatherbench", _weather_gain, claims=("rr_vs_std",)),
    PaperNumber("Fig. 1d", "Z500 example map (2019-08-09 22:00 UTC), MAE, Std", "0.0922", "04_weatherbench",
                _weather_mae("Std")),
    PaperNumber("Fig. 1d", "Z500 example map (2019-08-09 22:00 UTC), MAE, RR", "0.0730", "04_weatherbench",
                _weather_mae("RR")),
    PaperNumber("Fig. 3", "MNIST SVD test: RR's singular vectors resemble the data, Std's and Ort's do not",
                "shown as images (LPIPS values not public)", "01_svd_mnist", _svd,
                claims=tuple(f"{v}/*" for v in SVD_VARIANTS)),
    PaperNumber("Fig. 3", "peak SVD test: RR's singular vectors resemble the data, Std's and Ort's do not",
                "shown as images (LPIPS values not public)", "02_svd_peak", _svd,
                claims=tuple(f"{v}/*" for v in SVD_VARIANTS)),
    PaperNumber("Fig. 2", "information plane, task A: RR's layers in the centre (more central than Std and Ort)",
                "stated, no numbers", "05_information_planes", _planes("rr_more_central"),
                claims=("*/rr_more_central",)),
    PaperNumber("Fig. 2", "information plane, task A: Pre's early layers highest in I(X; D)", "stated, no numbers",
                "05_information_planes", _planes("pre_first_layer_ixt", " bits"), claims=("*/pre_first_layer_ixt",)),
    *[PaperNumber("Fig. 1a", f"texture-shape transfer, confidence for 'airplane' (ours: for the shape's class), {m}",
                  v, "07_texture_shape", _texture(m), claims=("shape_prob",))
      for m, v in (("RR", "0.19"), ("Ort", "0.137"), ("Std", "0.126"), ("Pre", "0.121"))],
    PaperNumber("Abstract", "RR improves GANs (the paper's GAN experiment is not public)", "stated, no numbers",
                "08_gan", _gan, claims=("fd_vs_Std", "fd_vs_Ort")),
]

FETCH = {"03_cifar_resnet110": "make data-cifar", "04_weatherbench": "make data-weather"}
NEEDS = {"03_cifar_resnet110": "needs CIFAR-10 and a GPU", "04_weatherbench": "needs ERA5 and a GPU"}


def load_results(figures: Path) -> Results:
    """Every ``figures/<folder>/results.json``, by folder name."""
    out = {}
    for path in sorted(figures.glob("*/results.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"report: skipping unreadable {path}: {exc}", file=sys.stderr)
    return out


def folder_of(results: Results, stem: str) -> str | None:
    """The figure folder of notebook ``stem``: its own name, else one named ``<stem>_<suffix>`` (another output)."""
    if stem in results:
        return stem
    return next((k for k in sorted(results) if k.startswith(stem + "_")), None)


def labels_of(prov: dict, res: dict | None = None) -> list[str]:
    """What a figure's data are, in capitals where they are not the paper's: SYNTHETIC, SUBSET, REPLICA, SMOKE."""
    source = f"{prov.get('data_source', '')} {prov.get('label') or ''}"      # the figure's own label too
    out = []
    if "SYNTHETIC" in source.upper() or (res or {}).get("synthetic"):
        out.append("SYNTHETIC")
    if "subset" in source.lower():
        out.append("SUBSET")
    if "replica" in source.lower():
        out.append("REPLICA")
    if prov.get("profile") == "smoke":
        out.append("SMOKE")
    return out


def verdict_here(n: PaperNumber, results: Results) -> str:
    """The verdict column of a paper row: each claim of its notebook it concerns as ``verdict_line`` (one a line);
    "needs CIFAR-10 and a GPU" / "needs ERA5 and a GPU" where notebook 03 / 04 did not run (or ran on a stand-in:
    Fashion-MNIST, synthetic weather), "not reproduced here" for what has no notebook."""
    if not n.notebook or n.ours is None:
        return "not reproduced here"
    folder = folder_of(results, n.notebook)
    if folder is None:
        return NEEDS.get(n.notebook, f"not run (notebook {n.notebook} has no results)")
    res = results[folder]
    if not n.claims:
        return "no claim (an illustration; see the claims of the rows above)"
    try:
        mine = matching(claims_of(res), n.claims)
        lines = [verdict_line(k, v) for k, v in mine] or [f"no claim {', '.join(n.claims)} in {folder}/results.json"]
    except OldSchema as exc:
        lines = [f"{folder}/results.json: {exc.args[0]}"]
    if n.notebook in NEEDS and (folder != n.notebook or res.get("synthetic")):
        what = "SYNTHETIC data" if res.get("synthetic") else folder
        lines.append(f"(from {what}; the paper's setting {NEEDS[n.notebook]})")
    return "\n".join(lines)


README_BEGIN = "<!-- verdicts: made by `python scripts/build_report.py --readme` from figures/*/results.json -->"
README_END = "<!-- end of verdicts -->"


def readme_table(results: Results) -> str:
    """The README's table of what is reproduced: one row per paper number or finding, with the verdict here of every
    claim it concerns (from ``figures/*/results.json``, as the report's column), between ``README_BEGIN`` and
    ``README_END``; ``tests/test_scripts_build_report.py`` checks the README holds exactly this."""
    lines = [README_BEGIN, "", "| figure | the paper | paper | verdict here (RR - baseline, 95 % t-interval over paired "
             "seeds, n) |", "|---|---|---|---|"]
    for row in paper_rows(results):
        verdict = row["verdict"].replace("|", "/").replace("\n", "<br>")
        lines.append(f"| {row['figure']} | {row['quantity']} | {row['paper']} | {verdict} |")
    return "\n".join(lines + ["", README_END])


def paper_rows(results: Results) -> list[dict[str, str]]:
    """One row per ``PAPER_NUMBERS`` entry: figure, quantity, paper, ours, verdict (``verdict_here``), data, profile,
    labels."""
    rows = []
    for n in PAPER_NUMBERS:
        row = {"figure": n.figure, "quantity": n.quantity, "paper": n.paper, "ours": "",
               "verdict": verdict_here(n, results), "data": "", "profile": "", "labels": ""}
        folder = folder_of(results, n.notebook) if n.notebook else None
        if n.ours is None:
            row["ours"] = f"not reproduced: {n.why_not}"
        elif folder is None:
            fetch = FETCH.get(n.notebook)
            hint = f"; fetch its data: {fetch}" if fetch else ""
            row["ours"] = f"not run (notebook {n.notebook} has no results{hint})"
        else:
            res = results[folder]
            prov = res.get("provenance", {})
            try:
                row["ours"] = n.ours(res)
            except OldSchema as exc:
                row["ours"] = f"not in {folder}/results.json: {exc.args[0]}"
            except (KeyError, StopIteration, TypeError, ZeroDivisionError, AttributeError) as exc:
                row["ours"] = f"not in {folder}/results.json ({type(exc).__name__}: {exc})"
            row.update(data=portable(str(prov.get("data_source", ""))), profile=str(prov.get("profile", "")),
                       labels=" ".join(labels_of(prov, res)), folder=folder)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header,main,footer{max-width:1200px;margin:0 auto;padding:12px 20px}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.2em;margin-top:1.4em;border-bottom:1px solid #ddd}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;font-size:.82em}
.card img{width:100%;height:170px;object-fit:contain;background:#fff}
.card h3{font-size:1em;margin:.3em 0}.meta{color:#555}
.label{display:inline-block;background:#c00;color:#fff;border-radius:3px;padding:0 4px;margin-right:3px;
font-size:.85em;font-weight:600}
.label.SUBSET,.label.REPLICA{background:#b36b00}.label.SMOKE{background:#555}
table{border-collapse:collapse;width:100%;font-size:.82em;background:#fff}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.missing{color:#888}code{font-size:.95em}td.verdict{font-size:.95em;min-width:18em}
"""


def _page(title: str, body: str, css: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}"
            f"</title><style>{CSS}{css}</style></head><body>{body}</body></html>\n")


def _labels_html(labels: Sequence[str]) -> str:
    return "".join(f"<span class=\"label {html.escape(x)}\">{html.escape(x)}</span>" for x in labels)


def _caption(name: str) -> str:
    return name.replace("_", " ")


def figure_cards(figures: Path, out: Path) -> tuple[str, int]:
    """The cards of every PNG under ``figures/`` (copied to ``out/figures/``), grouped by folder, and their count."""
    from racecar_repro.plotting import read_png_provenance
    parts, count = [], 0
    for folder in sorted(p for p in figures.iterdir() if p.is_dir()):
        pngs = sorted(folder.glob("*.png"))
        if not pngs:
            continue
        parts.append(f"<h2 id=\"{html.escape(folder.name)}\">{html.escape(folder.name)}</h2><div class=\"cards\">")
        for png in pngs:
            dest = out / "figures" / folder.name / png.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(png, dest)
            pdf = png.with_suffix(".pdf")
            if pdf.exists():
                shutil.copy2(pdf, dest.with_suffix(".pdf"))
            try:
                prov = read_png_provenance(png)
            except (KeyError, OSError, ValueError):
                prov = {}
            commit = f"{prov.get('git_commit', '?')}{' (dirty)' if prov.get('git_dirty') else ''}"
            rel = f"figures/{folder.name}/{png.name}"
            parts.append(
                f"<div class=\"card\"><a href=\"{html.escape(rel)}\"><img src=\"{html.escape(rel)}\" "
                f"alt=\"{html.escape(_caption(png.stem))}\" loading=\"eager\"></a>"
                f"<h3>{_labels_html(labels_of(prov))}{html.escape(_caption(png.stem))}</h3>"
                f"<div class=\"meta\">profile <b>{html.escape(str(prov.get('profile', '?')))}</b> &middot; commit "
                f"<code>{html.escape(commit)}</code> &middot; {html.escape(str(prov.get('timestamp_utc', '')))}"
                f"<br>data: {html.escape(portable(str(prov.get('data_source', 'unknown'))))}"
                + (f" &middot; <a href=\"{html.escape(rel[:-4])}.pdf\">PDF</a>" if pdf.exists() else "")
                + "</div></div>")
            count += 1
        parts.append("</div>")
    return "\n".join(parts), count


def paper_table(rows: list[dict[str, str]]) -> str:
    """The "paper vs this companion" table, one ``<tr class="paper-number">`` per paper number, with the column
    "verdict here" (each claim the row concerns: verdict, mean paired difference, 95 % interval, n)."""
    head = "".join(f"<th>{h}</th>" for h in ("figure", "quantity", "paper", "this companion", "verdict here", "data",
                                              "profile"))
    body = []
    for r in rows:
        cls = ' class="missing"' if r["ours"].startswith(("not run", "not reproduced", "not in")) else ""
        verdict = r.get("verdict", "")
        vcls = "verdict missing" if verdict.startswith(("not reproduced", "needs", "not run", "no ")) or \
            "no verdicts" in verdict else "verdict"
        body.append(
            f"<tr class=\"paper-number\"><td>{html.escape(r['figure'])}</td><td>{html.escape(r['quantity'])}</td>"
            f"<td>{html.escape(r['paper'])}</td><td{cls}>"
            f"{_labels_html(r['labels'].split())}{html.escape(r['ours'])}</td>"
            f"<td class=\"{vcls}\">{'<br>'.join(html.escape(x) for x in verdict.splitlines())}</td>"
            f"<td>{html.escape(r['data'])}</td><td>{html.escape(r['profile'])}</td></tr>")
    return f"<table id=\"paper-vs-ours\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def notebook_pages(build: Path, out: Path) -> list[tuple[str, str]]:
    """Every executed notebook of ``build`` rendered to ``out/notebooks/<stem>.html`` (nbconvert's basic template
    inside this report's page: no external script or style); returns ``(stem, title)`` pairs."""
    import nbformat
    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter
    exporter = HTMLExporter(template_name="basic")
    css = HtmlFormatter().get_style_defs(".highlight") + (
        ".jp-Cell,.cell{margin:10px 0}.input_area,.jp-InputArea{background:#f5f5f5;padding:4px}"
        "pre{white-space:pre-wrap;font-size:.8em}img{max-width:100%}.output_stderr,.jp-RenderedText"
        "[data-mime-type='application/vnd.jupyter.stderr']{display:none}")
    pages = []
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for path in sorted(build.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first = next((c.source for c in nb.cells if c.cell_type == "markdown"), path.stem)
        title = first.splitlines()[0].lstrip("# ").strip() or path.stem
        body, _ = exporter.from_notebook_node(nb)
        page = (f"<header><p><a href=\"../index.html\">&larr; report</a></p></header><main>{body}</main>")
        (out / "notebooks" / f"{path.stem}.html").write_text(_page(title, page, css))
        pages.append((path.stem, title))
    return pages


def build(figures: Path, build_dir: Path, out: Path, profile: str) -> dict[str, Any]:
    """Write the report to ``out``; returns what it holds (cards, paper rows, pages)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    results = load_results(figures)
    cards, n_cards = figure_cards(figures, out) if figures.is_dir() else ("", 0)
    rows = paper_rows(results)
    pages = notebook_pages(build_dir / profile, out) if (build_dir / profile).is_dir() else []
    nav = "".join(f"<li><a href=\"notebooks/{html.escape(s)}.html\">{html.escape(s)}</a>: {html.escape(t)}</li>"
                  for s, t in pages) or "<li>no executed notebooks (run make figures first)</li>"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    inside = out.resolve().is_relative_to(ROOT)       # a link to the repository's docs/*.md, never an absolute path
    docs = (f"<a href=\"{html.escape(Path(os.path.relpath(ROOT / 'docs', out.resolve())).as_posix())}/\">docs/</a>"
            if inside else "<code>docs/</code>")
    body = (
        "<header><h1>Reviving Autoencoder Pretraining: the reproduction report</h1>"
        f"<p>Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit <code>{html.escape(commit)}</code>"
        f" from <code>figures/</code> and the executed notebooks of profile <b>{html.escape(profile)}</b>. "
        "Labels: <span class=\"label SYNTHETIC\">SYNTHETIC</span> data made by the project (not the paper's), "
        "<span class=\"label SUBSET\">SUBSET</span> part of the paper's data set, <span class=\"label REPLICA\">"
        "REPLICA</span> a re-generated data set, <span class=\"label SMOKE\">SMOKE</span> a pipeline check.</p>"
        f"<p>Documentation: {docs} in the repository (data, cluster, profiles and costs, notebooks, reverse pass, "
        "layout).</p></header><main>"
        "<h2>Paper vs this companion</h2><p>Every number the paper gives, ours next to it (mean +- standard "
        "deviation over the seeds that ran), and the verdict here on each claim the row concerns: a paired comparison "
        "over seeds (per seed, the method minus its baseline trained with the same seed), its mean difference, 95 % "
        "Student-t interval and n; <i>shown</i> when the interval excludes zero in the paper's direction, <i>not "
        "shown</i> when it contains zero, <i>contradicted</i> when it excludes zero the other way, <i>too few "
        "seeds</i> under 3, <i>task failed</i> when runs that did not learn their task leave under 3 "
        "(racecar_repro.verdicts).</p>" + paper_table(rows) +
        f"<h2>Notebooks</h2><ul>{nav}</ul>" + cards + "</main>"
        "<footer><p>racecar companion; cite the paper (CITATION.cff). Offline: every file is in this folder.</p>"
        "</footer>")
    (out / "index.html").write_text(_page("racecar reproduction report", body))
    return {"cards": n_cards, "rows": rows, "pages": [s for s, _ in pages]}


# -------------------------------------------------------------------------------------------- headless Chromium
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The first Chromium on PATH (or in /usr/lib/chromium*), or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    for path in ("/usr/lib/chromium-headless-shell/chromium-headless-shell", "/usr/lib/chromium/chromium"):
        if os.access(path, os.X_OK):
            return path
    return None


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket (``websocket-client``)."""

    def __init__(self, url: str) -> None:
        import websocket
        self.ws = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.time() + timeout
        for i, msg in enumerate(self.events):
            if msg.get("method") == event:
                return self.events.pop(i)
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == event:
                return msg
            self.events.append(msg)
        raise TimeoutError(f"no {event} within {timeout} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHECK_JS = """(() => {
  const imgs = [...document.images];
  return JSON.stringify({images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src').slice(0, 80)),
    rows: document.querySelectorAll('#paper-vs-ours tr.paper-number').length,
    external: [...document.querySelectorAll('script[src],link[href],img[src]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => /^(https?:)?\\/\\//.test(u))});
})()"""


def check(out: Path, browser: str | None = None, screenshot: Path | None = None) -> dict[str, dict]:
    """Open ``out/index.html`` and every notebook page in headless Chromium; returns per page: images, broken
    images, paper rows, console errors, failed requests and external references (the caller asserts)."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no headless Chromium found; install it with: make browser "
                                "(Debian package chromium-headless-shell)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="racecar-chromium-") as profile:
        proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                 f"--remote-debugging-port={port}", "--window-size=1280,1600", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            targets = None
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                        targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                    if targets:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            if not targets:
                raise RuntimeError(f"{browser} did not open its DevTools port")
            tools = DevTools(targets[0]["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.call(f"{domain}.enable")
            pages = [out / "index.html", *sorted((out / "notebooks").glob("*.html"))]
            report: dict[str, dict] = {}
            for page in pages:
                tools.events.clear()
                tools.call("Page.navigate", url=page.resolve().as_uri())
                tools.wait_for("Page.loadEventFired")
                time.sleep(0.3)
                value = tools.call("Runtime.evaluate", expression=CHECK_JS, returnByValue=True)["result"]["value"]
                found = json.loads(value)
                found["errors"] = [
                    m["params"].get("exceptionDetails", {}).get("text", "exception")
                    if m["method"] == "Runtime.exceptionThrown" else m["params"]["entry"]["text"]
                    for m in tools.events
                    if m.get("method") == "Runtime.exceptionThrown"
                    or (m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error")]
                found["failed_requests"] = [m["params"].get("errorText", "") for m in tools.events
                                            if m.get("method") == "Network.loadingFailed"]
                report[str(page.relative_to(out))] = found
                if screenshot is not None and page.name == "index.html":
                    shot = tools.call("Page.captureScreenshot", format="png")
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
            return report
        finally:   # the whole process group: Debian's chromium-headless-shell is a shell script around the browser
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            for _ in range(50):             # the browser itself, which the script started and did not wait on
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.killpg(proc.pid, signal.SIGKILL)


def problems(report: dict[str, dict], n_rows: int) -> list[str]:
    """What is wrong with a checked report, in words (empty: all good)."""
    out = []
    for page, found in report.items():
        for key in ("broken", "errors", "failed_requests", "external"):
            if found[key]:
                out.append(f"{page}: {key}: {found[key]}")
    index = report.get("index.html", {})
    if index.get("rows") != n_rows:
        out.append(f"index.html: {index.get('rows')} paper rows, expected {n_rows}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: build, and with ``--check`` verify in headless Chromium."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="the executed notebooks of build/<profile>/")
    parser.add_argument("--figures", type=Path, default=Path(os.environ.get("RACECAR_FIGURES_DIR", ROOT / "figures")))
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--out", type=Path, default=ROOT / "report")
    parser.add_argument("--check", action="store_true", help="open every page in headless Chromium and verify")
    parser.add_argument("--readme", action="store_true", help="print the README's table of verdicts and stop")
    args = parser.parse_args(argv)
    if args.readme:
        print(readme_table(load_results(args.figures)))
        return 0
    made = build(args.figures, args.build, args.out, args.profile)
    print(f"report: {args.out / 'index.html'}: {made['cards']} figures, {len(made['rows'])} paper numbers, "
          f"{len(made['pages'])} notebook pages")
    if args.check:
        found = check(args.out, screenshot=args.out / "screenshot.png")
        issues = problems(found, len(made["rows"]))
        images = sum(f["images"] for f in found.values())
        print(f"checked in headless Chromium: {len(found)} pages, {images} images, screenshot "
              f"{args.out / 'screenshot.png'}" + ("" if not issues else "; PROBLEMS:\n  " + "\n  ".join(issues)))
        return 1 if issues else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
