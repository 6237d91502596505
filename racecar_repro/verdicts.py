"""Verdicts: a claim of the paper held against this companion's runs, as a paired comparison over seeds.

Every claim the companion prints goes through ``paired``: per seed, the difference between the method under test and
a baseline trained with the same seed (the same initialisation draw and data order); the mean difference, a 95 %
Student-t interval on it, the number of pairs n, and one of

- ``shown``: the interval excludes zero in the paper's direction;
- ``not shown``: the interval contains zero;
- ``contradicted``: the interval excludes zero the other way;
- ``too few seeds``: fewer than ``MIN_SEEDS`` pairs, no interval worth the name;
- ``task failed``: fewer than ``MIN_SEEDS`` pairs are left because runs did not learn their task. A run that failed
  its task (``failed_runs``) is left out of every pair and never confirms a claim.

Why a t-interval and not a bootstrap over seeds: a figure affords 3 to 10 seeds, and a bootstrap resamples from those
n values only. Its percentile interval never reaches beyond the observed range, which holds the true mean with
probability ``1 - 2 * 0.5**n`` for a symmetric spread (0.75 at n = 3, 0.94 at n = 5), so it is overconfident exactly
where the seeds are few. The t-interval is exact for normally distributed differences and widens as n shrinks.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

MIN_SEEDS = 3
LEVEL = 0.95
INTERVAL = "95 % Student-t interval over paired seeds"
DIRECTIONS = ("higher", "lower")
VERDICTS = ("shown", "not shown", "contradicted", "too few seeds", "task failed")


@dataclass(frozen=True)
class Verdict:
    """One paired comparison: ``method - baseline`` of ``measure`` over the seeds both learnt their task on."""

    verdict: str                    # one of VERDICTS
    diff: float | None              # mean over pairs of (method - baseline); None without pairs
    ci: tuple[float, float] | None  # the 95 % t-interval of that mean; None under MIN_SEEDS pairs
    n: int                          # pairs used
    measure: str                    # what is compared, e.g. "lead_span_energy"
    direction: str                  # what the paper says of the method: "higher" or "lower" than the baseline
    method: str = "RR"
    baseline: str = "Std"
    seeds: tuple[int, ...] = ()     # the paired seeds
    excluded: dict[str, list[int]] = field(default_factory=dict)  # seeds left out per method (task failed, NaN)

    def as_dict(self) -> dict:
        """The record ``results.json`` keeps: verdict, diff, ci, n, measure, direction and the rest."""
        d = asdict(self)
        d["ci"] = None if self.ci is None else list(self.ci)
        d["seeds"] = list(self.seeds)
        d["interval"] = INTERVAL
        return d


def t_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The two-sided ``level`` Student-t interval of the mean of ``diffs`` (at least two values)."""
    d = np.asarray(diffs, dtype=float)
    from scipy import stats      # here, not at import: scipy.stats costs a second in every worker process
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def paired(method_values: Mapping[int, float], baseline_values: Mapping[int, float], measure: str,
           direction: str = "higher", method: str = "RR", baseline: str = "Std",
           failed_runs: Mapping[str, Iterable[int]] | None = None) -> Verdict:
    """The verdict on "``method`` has a ``direction`` ``measure`` than ``baseline``" from per-seed values
    (``{seed: value}``); the seeds in ``failed_runs[name]`` (runs that did not learn their task) and non-finite
    values are left out of the pairs."""
    if direction not in DIRECTIONS:
        raise ValueError(f"racecar: direction must be one of {DIRECTIONS}, not {direction!r}")
    failed = set().union(*[{int(s) for s in seeds} for seeds in (failed_runs or {}).values()])
    bad = {name: {int(s) for s in (failed_runs or {}).get(name, [])}
           | {s for s, v in values.items() if not math.isfinite(float(v))}
           for name, values in ((method, method_values), (baseline, baseline_values))}
    both = set(method_values) & set(baseline_values)
    seeds = tuple(sorted(both - failed - bad[method] - bad[baseline]))
    excluded = {name: sorted(s) for name, s in bad.items() if s}
    diffs = [float(method_values[s]) - float(baseline_values[s]) for s in seeds]
    diff = float(np.mean(diffs)) if diffs else None
    if len(seeds) < MIN_SEEDS:
        return Verdict("task failed" if both & failed else "too few seeds", diff, None, len(seeds), measure, direction,
                       method, baseline, seeds, excluded)
    lo, hi = t_interval(diffs)
    sign = 1.0 if direction == "higher" else -1.0
    lo_d, hi_d = sorted((sign * lo, sign * hi))
    verdict = "shown" if lo_d > 0 else "contradicted" if hi_d < 0 else "not shown"
    return Verdict(verdict, diff, (lo, hi), len(seeds), measure, direction, method, baseline, seeds, excluded)


def all_of(verdicts: Sequence[Verdict]) -> dict:
    """One claim made of several comparisons (RR above Std *and* Ort): ``shown`` only when every comparison is
    shown, ``contradicted`` when any is; else the first of ``task failed``, ``too few seeds``, ``not shown`` that
    any comparison has. Its diff, ci and n are those of the weakest comparison (the lowest interval bound in the
    paper's direction); every comparison is kept under ``against``."""
    if not verdicts:
        raise ValueError("racecar: a claim needs at least one comparison")
    names = [v.verdict for v in verdicts]
    overall = next((w for w in ("contradicted", "task failed", "too few seeds", "not shown") if w in names), "shown")

    def strength(v: Verdict) -> float:
        if v.ci is None:
            return -math.inf
        return min(v.ci) if v.direction == "higher" else -max(v.ci)

    weakest = min(verdicts, key=strength)
    return {**weakest.as_dict(), "verdict": overall, "baseline": "+".join(v.baseline for v in verdicts),
            "against": {v.baseline: v.as_dict() for v in verdicts}}


def failed_seeds(values: Mapping[int, float], minimum: float) -> list[int]:
    """The seeds whose task measure (an accuracy) is under ``minimum`` or not finite: runs that did not learn their
    task."""
    return sorted(int(s) for s, v in values.items() if not (math.isfinite(float(v)) and float(v) >= minimum))


def text(claim: Mapping, digits: int = 3) -> str:
    """One line for a claim record (``Verdict.as_dict`` or ``all_of``): verdict, mean difference, interval, n."""
    diff, ci = claim.get("diff"), claim.get("ci")
    who = f"{claim.get('method', 'RR')} - {claim.get('baseline', 'Std')}"
    fmt = f"{{:+.{digits}f}}"
    line = f"{claim['verdict']}: {who} {claim['measure']} = " + ("n/a" if diff is None else fmt.format(diff))
    line += (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci is not None else " [no interval]")
    line += f" (95 % t, n = {claim['n']}; paper: {claim['direction']})"
    excluded = claim.get("excluded") or {}
    for against in (claim.get("against") or {}).values():
        for name, seeds in (against.get("excluded") or {}).items():
            excluded = {**excluded, name: sorted(set(excluded.get(name, [])) | set(seeds))}
    if excluded:
        line += "; left out: " + ", ".join(f"{m} seeds {s}" for m, s in excluded.items())
        line += " (under the task threshold)"
    return line


def record(statement: str, claim: Verdict | Mapping, **extra) -> dict:
    """A claim as ``results.json`` keeps it under ``claim[<name>]``: the paper's statement in words, then the
    comparison's fields (``verdict, diff, ci, n, measure, direction, method, baseline, seeds, excluded, interval``
    and, for ``all_of``, ``against``) and any ``extra`` (e.g. the methods' task accuracies)."""
    d = claim.as_dict() if isinstance(claim, Verdict) else dict(claim)
    return {"statement": statement, **d, **extra}
