"""stats.py: the generic statistics (the judge-specific wrappers are tested in test_judge_agreement)."""

import numpy as np
import pytest

from interp_playground.stats import bootstrap_mean_ci, rng_for, spearman


def test_spearman_names_the_constant_side_by_its_label():
    rho, reason = spearman([3.0, 3.0, 3.0], [1.0, 2.0, 3.0], labels=("projection", "aligned"))
    assert rho is None and reason == "projection gave every pair the same value (zero variance)"
    assert spearman([1.0, 2.0, 3.0], [9.0, 9.0, 9.0])[1] == "y gave every pair the same value (zero variance)"
    # perfectly inverted ranks, by hand: rho = -1
    assert spearman([1.0, 2.0, 3.0], [30.0, 20.0, 10.0]) == (pytest.approx(-1.0), None)


def test_rng_for_depends_only_on_seed_and_names():
    a = rng_for(7, "cond", "nll").integers(0, 1 << 30, size=4)
    b = rng_for(7, "cond", "nll").integers(0, 1 << 30, size=4)
    c = rng_for(7, "cond", "aligned").integers(0, 1 << 30, size=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # a constant sample's interval is the constant itself
    assert bootstrap_mean_ci([2.5] * 6, 50, rng_for(0, "x")) == (2.5, 2.5)
