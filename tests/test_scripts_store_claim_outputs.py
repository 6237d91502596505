"""scripts/store_claim_outputs.py: the sanitizer nbval uses, and the tags and stored output it writes."""
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import store_claim_outputs as sco  # noqa: E402


def test_sanitizer_keeps_the_words_and_hides_numbers_verdicts_and_paths():
    text = ("official   lead_max_cos  RR above Std and Ort: False   Std 0.042  Ort -1e-05  RR nan\n"
            "gap +2.50 %, seed0 True\nwrote /tmp/x/figures/01_svd_mnist/results.json\n")
    clean = sco.sanitize(text)
    assert clean == ("official lead_max_cos RR above Std and Ort: BOOL Std N Ort N RR N\n"
                     "gap N %, seedN BOOL\nwrote RESULTS_JSON\n")
    assert sco.sanitize(clean) == clean                        # stored text is a fixed point
    assert sco.sanitize(text.replace("0.042", "12.5")) == clean   # other numbers, other column widths: equal
    assert sco.sanitize(text.replace("lead_max_cos", "lead_cos")) != clean


def test_tag_stores_the_claim_and_marks_every_other_cell_ignored():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("print(x)", outputs=[nbformat.v4.new_output("stream", text="old")],
                                  execution_count=4),
        nbformat.v4.new_code_cell("print('claim')")])
    out = [nbformat.v4.new_output("stream", name="stdout", text="claim N\n")]
    tagged = sco.tag(nb, out)
    code = [c for c in tagged.cells if c.cell_type == "code"]
    assert code[0].metadata["tags"] == ["parameters", "nbval-ignore-output"]
    assert code[1].outputs == [] and code[1].execution_count is None
    assert code[2].metadata["tags"] == ["nbval-check-output"] and code[2].outputs == out
    assert code[2].execution_count == 3 and nb.cells[2].outputs[0].text == "old"     # the input is left alone
    assert sco.tag(tagged, out) == tagged                                             # idempotent


def test_claim_cells_must_only_print():
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("claim", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="RR 0.5 True\n"),
        nbformat.v4.new_output("stream", name="stderr", text="progress\n"),
        nbformat.v4.new_output("stream", name="stdout", text="wrote /a/results.json\n")])])
    (out,) = sco.claim_outputs(executed)
    assert out.text == "RR N BOOL\nwrote RESULTS_JSON\n"
    executed.cells[0].outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": "table"}))
    with pytest.raises(ValueError, match="should only print"):
        sco.claim_outputs(executed)
