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

from racecar_core.plotting import save_figure  # noqa: E402


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
    (cifar / "results.json").write_text(json.dumps({"provenance": {"profile": "quick", "data_source": "Fashion-MNIST "
                                                                   "subset"}, "table": table, "per_run": per_run}))
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
    mse = rows["72 h forecast, latitude-weighted MSE (normalised), RR"]
    assert mse["paper"] == "0.0106" and mse["ours"].startswith("not run") and "make data-weather" in mse["ours"]
    assert all(r["ours"].startswith("not reproduced") for q, r in rows.items() if q.startswith("texture"))
    index = (out / "index.html").read_text()
    assert index.count('class="paper-number"') == len(br.PAPER_NUMBERS)
    assert "http://" not in index and "https://" not in index              # offline: no CDN, no external link
    assert '<span class="label SYNTHETIC">SYNTHETIC</span>accuracy' in index
    assert (out / "figures" / "04_weatherbench" / "accuracy.png").is_file()
    page = (out / "notebooks" / "03_cifar_resnet110.html").read_text()
    assert "<title>CIFAR-10 with ResNet-110 (Fig. 1c)</title>" in page and "data:image/png;base64," in page
    assert "<script src" not in page and "https://" not in page


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
    found = br.check(out, _browser_or_skip(), screenshot=out / "screenshot.png")
    assert set(found) == {"index.html", "notebooks/03_cifar_resnet110.html"}
    assert found["index.html"]["images"] == 2 and found["notebooks/03_cifar_resnet110.html"]["images"] == 1
    assert found["index.html"]["rows"] == len(br.PAPER_NUMBERS)
    assert br.problems(found, len(made["rows"])) == []
    assert (out / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "figures" / "04_weatherbench" / "accuracy.png").unlink()          # a figure that does not resolve
    broken = br.problems(br.check(out, br.find_browser()), len(made["rows"]))
    assert any("broken" in p and "04_weatherbench/accuracy.png" in p for p in broken), broken
