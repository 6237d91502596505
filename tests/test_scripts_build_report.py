"""scripts/build_report.py: the offline HTML report, checked in headless Chromium (Debian's chromium-headless-shell,
installed by ``make browser``, a prerequisite of ``make test``)."""
import base64
import io
import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_report as br  # noqa: E402

from racecar_repro import verdicts  # noqa: E402
from racecar_repro.plotting import save_figure  # noqa: E402

pytestmark = pytest.mark.integration  # notebooks / the report in a browser


def _png_bytes() -> bytes:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@pytest.fixture
def site(tmp_path):
    """Figures of two notebooks (one on synthetic data), their results.json, and one executed notebook."""
    figures, build = tmp_path / "figures", tmp_path / "build"
    cifar = figures / "03_cifar_resnet110_fashion_mnist"
    synth = figures / "04_weatherbench"
    for folder, source in ((cifar, "torchvision FashionMNIST; class-balanced subset 5000 train"),
                           (synth, "SYNTHETIC look-alike of WeatherBench 2, NOT ERA5")):
        folder.mkdir(parents=True)
        fig, ax = plt.subplots()
        ax.bar([0, 1], [0.9, 0.92])
        save_figure(fig, "accuracy", folder, {"profile": "quick", "data_source": source, "git_commit": "abc1234",
                                              "git_dirty": False})
        plt.close(fig)
    per_run = {f"{m}/seed{s}": {"final_acc": 0.9} for m in ("Std", "Ort", "RR") for s in (0, 1, 2)}
    table = [{"method": m, "mean": v, "std": 0.004, "seeds": 3} for m, v in (("Std", 0.91), ("Ort", 0.912),
                                                                              ("RR", 0.915))]
    acc = {"Std": [0.910, 0.905, 0.915], "Ort": [0.912, 0.909, 0.915], "RR": [0.915, 0.911, 0.919]}
    seeds = lambda m: dict(enumerate(acc[m]))  # noqa: E731
    claim = {name: verdicts.record(f"{a} above {b}", verdicts.paired(seeds(a), seeds(b), "test_accuracy", "higher",
                                                                    method=a, baseline=b))
             for name, a, b in (("rr_vs_std", "RR", "Std"), ("ort_vs_std", "Ort", "Std"), ("rr_vs_ort", "RR", "Ort"))}
    (cifar / "results.json").write_text(json.dumps({"provenance": {"profile": "quick", "data_source": "Fashion-MNIST "
                                                                   "subset"}, "table": table, "per_run": per_run,
                                                    "claim": claim}))
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# CIFAR-10 with ResNet-110 (Fig. 1c)\nText."),
        nbformat.v4.new_code_cell("print('hello')", execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="hello\n"),
            nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(_png_bytes()).decode(),
                                                         "text/plain": "<Figure>"})])])
    (build / "quick").mkdir(parents=True)
    nbformat.write(nb, str(build / "quick" / "03_cifar_resnet110.ipynb"))
    return figures, build, tmp_path / "report"


def test_the_report_has_a_card_per_figure_a_row_per_paper_number_and_a_page_per_notebook(site):
    figures, build, out = site
    made = br.build(figures, build, out, "quick")
    assert made["cards"] == 2 and made["pages"] == ["03_cifar_resnet110"]
    rows = {r["quantity"]: r for r in made["rows"]}
    assert len(made["rows"]) == len(br.PAPER_NUMBERS) >= 14
    assert rows["CIFAR-10 ResNet-110 test accuracy, RR"]["ours"] == "0.915 +- 0.004 (3 seeds)"
    assert rows["CIFAR-10 ResNet-110 test accuracy, RR"]["labels"] == "SUBSET"
    rr = rows["CIFAR-10 ResNet-110 test accuracy, RR"]["verdict"].splitlines()
    assert rr[0].startswith("rr_vs_std: shown: RR - Std test_accuracy = +0.005 [+0.003, +0.007] (95 % t, n = 3") and rr[1].startswith("rr_vs_ort: ")
    assert "needs CIFAR-10 and a GPU" in rows["CIFAR-10 ResNet-110 test accuracy, RR"]["verdict"]   # a stand-in
    assert mse_verdict(rows) == "needs ERA5 and a GPU"
    texture = [r for q, r in rows.items() if q.startswith("texture")]
    assert len(texture) == 4 and all(r["verdict"].startswith("not run (notebook 07_texture_shape") for r in texture)
    mse = rows["72 h forecast, latitude-weighted MSE (normalised), RR"]
    assert mse["paper"] == "0.0106" and mse["ours"].startswith("not run") and "make data-weather" in mse["ours"]
    assert all(r["ours"] == "not run (notebook 07_texture_shape has no results)" for r in texture)
    gan_row = rows["RR improves GANs (the paper's GAN experiment is not public)"]
    assert gan_row["ours"] == "not run (notebook 08_gan has no results)" and gan_row["paper"] == "stated, no numbers"
    assert br._gan({"table": [{"method": "Std", "fd_mean": 12.0, "fd_std": 1.0, "seeds": 3},
                              {"method": "RR", "fd_mean": 10.0, "fd_std": 0.5, "seeds": 3}],
                    "provenance": {"params": {"dataset": "fashion_mnist"}}}).startswith(
        "Frechet distance in a classifier's features (not Inception's FID): Std 12.00 +- 1.00, RR 10.00 +- 0.50 (3")
    index = (out / "index.html").read_text()
    assert index.count('class="paper-number"') == len(br.PAPER_NUMBERS) and "<th>verdict here</th>" in index
    assert "http://" not in index and "https://" not in index              # offline: no CDN, no external link
    assert '<span class="label SYNTHETIC">SYNTHETIC</span>accuracy' in index
    assert (out / "figures" / "04_weatherbench" / "accuracy.png").is_file()
    page = (out / "notebooks" / "03_cifar_resnet110.html").read_text()
    assert "<title>CIFAR-10 with ResNet-110 (Fig. 1c)</title>" in page and "data:image/png;base64," in page
    assert "<script src" not in page and "https://" not in page


def mse_verdict(rows: dict) -> str:
    return rows["72 h forecast, latitude-weighted MSE (normalised), RR"]["verdict"]


def _write(folder: Path, res: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(res))


def _rec(ours: list[float], theirs: list[float], measure: str, direction: str, **kw) -> dict:
    return verdicts.record("a claim", verdicts.paired(dict(enumerate(ours)), dict(enumerate(theirs)), measure,
                                                      direction, **kw))


def test_the_verdict_column_shows_each_claim_of_the_row_with_interval_and_n(tmp_path):
    """results.json files with the claim schema, built here: every row shows its claims' verdict, interval and n."""
    figures = tmp_path / "figures"
    std, up, flat = [0.10, 0.12, 0.11, 0.13], [0.20, 0.23, 0.21, 0.22], [0.11, 0.11, 0.12, 0.12]
    svd = {f"{v}/{m}": _rec(up if v == "official" else flat, std, m, "higher", baseline="Std+Ort")
           for v in ("official", "corrected") for m in ("lead_max_cos", "lead_span_energy", "best_k_max_cos")}
    svd["corrected_lambda/lead_max_cos"] = _rec(up, std, "lead_max_cos", "higher",
                                                failed_runs={"RR": [0, 1]})  # task failed: never confirms
    per_run = {f"{m}/seed{s}": {} for m in ("Std", "Ort", "RR") for s in range(4)}
    _write(figures / "02_svd_peak", {"provenance": {"profile": "quick", "data_source": "peak"}, "claim": svd,
                                     "per_run": per_run})
    weather = {"rr_vs_std": {**_rec([0.0106, 0.0107, 0.0105], [0.0123, 0.0124, 0.0122], "mse_norm", "lower"),
                             "rr_gain_percent": 13.8, "paper_gain_percent": 13.7}}
    _write(figures / "04_weatherbench", {"provenance": {"profile": "paper", "data_source": "ERA5"}, "claim": weather,
                                         "summary": {m: {"all": {"mse_norm": {"mean": v, "std": 1e-4}}}
                                                     for m, v in (("Std", 0.0123), ("RR", 0.0106))},
                                         "per_run": {f"{m}/seed{s}": {"example_mae": 0.08, "example_time": "x"}
                                                     for m in ("Std", "RR") for s in range(3)}})
    planes = {f"{e}/{c}": _rec(up, std, "centrality" if c == "rr_more_central" else "ixt", "higher")
              for e in ("binning", "kde") for c in ("rr_more_central", "pre_first_layer_ixt")}
    _write(figures / "05_information_planes", {"provenance": {"profile": "quick"}, "claim": planes,
                                               "per_run": per_run})
    _write(figures / "01_svd_mnist", {"provenance": {"profile": "quick"}, "per_run": per_run,  # the older schema
                                      "claim": {"official": {"lead_max_cos": {"rr_above_std_and_ort": True}}}})
    made = br.build(figures, tmp_path / "build", tmp_path / "report", "quick")
    rows = {r["quantity"]: r for r in made["rows"]}
    peak = rows["peak SVD test: RR's singular vectors resemble the data, Std's and Ort's do not"]
    lines = peak["verdict"].splitlines()
    assert len(lines) == 7 and lines[0].startswith("official/lead_max_cos: shown: RR - Std+Ort lead_max_cos = +0.")
    assert all("n = 4;" in x for x in lines[:6]) and all("[" in x and "]" in x for x in lines)
    assert lines[3].startswith("corrected/lead_max_cos: not shown")
    assert lines[6].startswith("corrected_lambda/lead_max_cos: task failed") and "left out: RR seeds [0, 1]" in lines[6]
    assert peak["ours"].startswith("official: shown in 3/3 measures") and "corrected: shown in 0/3" in peak["ours"]
    gain = rows["RR's gain over Std"]
    assert gain["ours"].startswith("+13.8 %")
    assert gain["verdict"].startswith("rr_vs_std: shown: RR - Std mse_norm = -0.00") and "n = 3;" in gain["verdict"]
    assert mse_verdict(rows) == gain["verdict"]
    assert rows["Z500 example map (2019-08-09 22:00 UTC), MAE, RR"]["verdict"].startswith("no claim")
    central = rows["information plane, task A: RR's layers in the centre (more central than Std and Ort)"]
    assert [x.split(":")[0] for x in central["verdict"].splitlines()] == ["binning/rr_more_central",
                                                                         "kde/rr_more_central"]
    assert central["ours"].startswith("binning: RR - Std centrality +0.")
    old = rows["MNIST SVD test: RR's singular vectors resemble the data, Std's and Ort's do not"]
    assert "no verdicts" in old["verdict"] and "no verdicts" in old["ours"]   # an older results.json says so
    assert rows["CIFAR-10 ResNet-110 test accuracy, Std"]["verdict"] == "needs CIFAR-10 and a GPU"
    index = (tmp_path / "report" / "index.html").read_text()
    assert "corrected_lambda/lead_max_cos: task failed" in index and index.count("<td class=\"verdict") == len(rows)


def test_the_report_names_data_sources_by_relative_paths(tmp_path):
    figures = tmp_path / "figures"
    source = f"torchvision FashionMNIST from {br.ROOT}/data/FashionMNIST/raw; subset"
    _write(figures / "06_rr_on_your_network", {"provenance": {"profile": "quick", "data_source": source}})
    fig, ax = plt.subplots()
    save_figure(fig, "curves", figures / "06_rr_on_your_network", {"profile": "quick", "data_source": source})
    plt.close(fig)
    br.build(figures, tmp_path / "build", tmp_path / "report", "quick")
    index = (tmp_path / "report" / "index.html").read_text()
    assert "from data/FashionMNIST/raw" in index and str(br.ROOT) not in index


def _browser_or_skip() -> str:
    browser = br.find_browser()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no headless Chromium in CI: make test installs it (make browser)")
        pytest.skip("no headless Chromium here: make browser installs it")
    return browser


def test_the_report_renders_in_headless_chromium_with_every_image(site):
    figures, build, out = site
    made = br.build(figures, build, out, "quick")
    before = _browsers()
    found = br.check(out, _browser_or_skip(), screenshot=out / "screenshot.png")
    assert set(found) == {"index.html", "notebooks/03_cifar_resnet110.html"}
    assert found["index.html"]["images"] == 2 and found["notebooks/03_cifar_resnet110.html"]["images"] == 1
    assert found["index.html"]["rows"] == len(br.PAPER_NUMBERS)
    assert br.problems(found, len(made["rows"])) == []
    assert (out / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "figures" / "04_weatherbench" / "accuracy.png").unlink()          # a figure that does not resolve
    broken = br.problems(br.check(out, br.find_browser()), len(made["rows"]))
    assert any("broken" in p and "04_weatherbench/accuracy.png" in p for p in broken), broken
    assert _browsers() <= before, "the browser outlived the check"   # Debian's launcher is a script around it


def _browsers() -> set[str]:
    """The processes of a report check's browser (their profile folder is racecar-chromium-*)."""
    out = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"racecar-chromium-" in (proc / "cmdline").read_bytes():
                out.add(proc.name)
        except OSError:
            pass
    return out


def test_the_readme_table_of_verdicts_is_what_the_committed_results_give():
    """No README verdict that its results.json does not carry: the README's table is ``--readme``'s output from the
    committed figures/*/results.json (after `make figures`: python scripts/build_report.py --readme)."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    assert br.README_BEGIN in text and br.README_END in text
    block = text[text.index(br.README_BEGIN):text.index(br.README_END) + len(br.README_END)]
    assert block == br.readme_table(br.load_results(root / "figures"))


def test_readme_table_has_a_row_per_paper_number(tmp_path):
    table = br.readme_table({})
    rows = [line for line in table.splitlines() if line.startswith(("| Fig.", "| Abstract"))]
    assert len(rows) == len(br.PAPER_NUMBERS)
    assert any("needs CIFAR-10 and a GPU" in r for r in rows) and any("needs ERA5 and a GPU" in r for r in rows)
