"""The verdict function on constructed numbers: a tie, a clear effect, a reversed one, too few seeds, failed runs."""
import math

import numpy as np
import pytest

from racecar_repro import verdicts
from racecar_repro.verdicts import all_of, failed_seeds, paired, t_interval


def seeds(values):
    return dict(enumerate(values))


def test_tie_is_not_shown():
    base = seeds([0.50, 0.52, 0.49, 0.51, 0.50])
    v = paired(seeds([0.50, 0.53, 0.48, 0.51, 0.50]), base, "acc")
    assert v.verdict == "not shown" and v.n == 5
    assert v.ci[0] < 0 < v.ci[1]


def test_clear_effect_is_shown_in_the_papers_direction():
    base = seeds([0.50, 0.52, 0.49, 0.51, 0.50])
    better = {s: x + 0.10 + 0.001 * s for s, x in base.items()}
    assert paired(better, base, "acc", "higher").verdict == "shown"
    assert paired(better, base, "error", "lower").verdict == "contradicted"
    worse = {s: x - 0.10 for s, x in base.items()}
    assert paired(worse, base, "error", "lower").verdict == "shown"
    assert paired(worse, base, "acc", "higher").verdict == "contradicted"


def test_pairing_removes_the_shared_seed_effect():
    """Seed effects far larger than the difference: a paired comparison sees the constant gain; unpaired means would
    drown it."""
    base = seeds([0.1, 0.9, 0.4, 0.7])
    v = paired({s: x + 0.01 for s, x in base.items()}, base, "acc")
    assert v.verdict == "shown" and v.diff == pytest.approx(0.01)


def test_interval_is_the_student_t_interval():
    d = [0.1, 0.3, 0.2]
    lo, hi = t_interval(d)
    half = 4.302652729911275 * np.std(d, ddof=1) / math.sqrt(3)    # t_{0.975, 2}
    assert (lo, hi) == pytest.approx((0.2 - half, 0.2 + half))


def test_one_or_two_seeds_are_too_few():
    v = paired({0: 0.9}, {0: 0.1}, "acc")
    assert v.verdict == "too few seeds" and v.ci is None and v.n == 1 and v.diff == pytest.approx(0.8)
    assert paired({0: 0.9, 1: 0.8}, {0: 0.1, 1: 0.2}, "acc").verdict == "too few seeds"


def test_a_run_that_failed_its_task_never_confirms():
    base = seeds([0.1, 0.1, 0.1, 0.1, 0.1])
    rr = seeds([0.9, 0.9, 0.9, 0.9, 0.9])       # a huge effect, but from runs that did not learn the task
    v = paired(rr, base, "span_energy", failed_runs={"RR": [0, 1, 2]})
    assert v.verdict == "task failed" and v.n == 2 and v.excluded == {"RR": [0, 1, 2]}
    assert verdicts.text(v.as_dict()).startswith("task failed: RR - Std span_energy = +0.800 [no interval] (95 % t, n = 2")
    assert verdicts.text(v.as_dict()).endswith("; left out: RR seeds [0, 1, 2] (under the task threshold)")
    # left out of the pairs: with three learnt pairs the claim rests on those alone
    v3 = paired(rr, base, "span_energy", failed_runs={"RR": [0, 1]})
    assert v3.n == 3 and v3.seeds == (2, 3, 4)
    # a baseline that failed removes its pairs too
    assert paired(rr, base, "span_energy", failed_runs={"Std": [0, 1, 2, 3]}).verdict == "task failed"


def test_non_finite_values_are_left_out():
    v = paired({0: 1.0, 1: float("nan"), 2: 1.2, 3: 1.1}, {0: 0.0, 1: 0.0, 2: 0.1, 3: 0.2}, "acc")
    assert v.n == 3 and v.excluded == {"RR": [1]}


def test_failed_seeds_threshold():
    assert failed_seeds({0: 1.0, 1: 0.5, 2: 0.95, 3: float("nan")}, 0.95) == [1, 3]


def test_all_of_needs_every_comparison():
    base = seeds([0.50, 0.52, 0.49, 0.51, 0.50])
    ort = seeds([0.60, 0.62, 0.59, 0.61, 0.60])
    rr = {s: x + 0.2 + 0.001 * s for s, x in base.items()}
    both = all_of([paired(rr, base, "m"), paired(rr, ort, "m", baseline="Ort")])
    assert both["verdict"] == "shown" and set(both["against"]) == {"Std", "Ort"}
    assert both["baseline"] == "Std+Ort" and both["diff"] == pytest.approx(0.102, abs=1e-3)   # the weaker: Ort
    tie = all_of([paired(rr, base, "m"), paired(ort, ort, "m", baseline="Ort")])
    assert tie["verdict"] == "not shown"
    worse = all_of([paired(rr, base, "m"), paired(base, ort, "m", baseline="Ort")])
    assert worse["verdict"] == "contradicted"


def test_record_has_the_fields_results_json_keeps():
    d = paired(seeds([1.0, 2.0, 3.0]), seeds([0.0, 0.5, 1.0]), "m").as_dict()
    assert {"verdict", "diff", "ci", "n", "measure", "direction"} <= set(d)
    assert d["verdict"] in verdicts.VERDICTS and isinstance(d["ci"], list)


def test_bad_direction_is_an_error():
    with pytest.raises(ValueError, match="direction"):
        paired({0: 1.0}, {0: 0.0}, "m", direction="up")
