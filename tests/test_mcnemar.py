"""The exact McNemar test of two classifiers on the same samples."""
import itertools
import math

import pytest
import torch

from pointcmt_pyg.train import mcnemar_exact


def _brute_force(only_a, only_b):
    """Two-sided exact p by enumerating every way the discordant pairs could fall
    (each side with probability 1/2), counting outcomes at most as likely as the one seen."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    seen = math.comb(n, only_a)
    return sum(math.comb(n, i) for i in range(n + 1) if math.comb(n, i) <= seen) / 2 ** n


@pytest.mark.parametrize("only_a,only_b", [(5, 0), (9, 1), (3, 3), (0, 0), (12, 4), (40, 25), (1, 30)])
def test_p_value_matches_enumeration_and_ignores_concordant_samples(only_a, only_b):
    both, neither = 37, 11
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    got = mcnemar_exact(a, b)
    assert got["only_a"] == only_a and got["only_b"] == only_b and got["num_samples"] == len(a)
    assert got["p_value"] == pytest.approx(_brute_force(only_a, only_b), rel=1e-12)
    swapped = mcnemar_exact(b, a)                          # symmetric
    assert swapped["p_value"] == got["p_value"] and swapped["only_a"] == only_b


def test_known_values_and_scipy():
    assert mcnemar_exact([1] * 5 + [0], [0] * 6)["p_value"] == 0.0625
    assert mcnemar_exact([1] * 9 + [0], [0] * 9 + [1])["p_value"] == 0.021484375   # 2 * 11 / 1024
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3000, generator=g) < 0.8, torch.rand(3000, generator=g) < 0.75
    got = mcnemar_exact(a, b)
    ref = scipy_stats.binomtest(min(got["only_a"], got["only_b"]), got["only_a"] + got["only_b"]).pvalue
    assert got["p_value"] == pytest.approx(ref, rel=1e-9)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="same samples"):
        mcnemar_exact([1, 0], [1])
    with pytest.raises(ValueError, match="correct_a must be 1-d"):
        mcnemar_exact([[1, 0]], [1, 0])
    with pytest.raises(ValueError, match="correct_b must hold booleans"):
        mcnemar_exact([1, 0], [2, 0])
    with pytest.raises(ValueError, match="correct_b must hold booleans"):
        mcnemar_exact([1, 0], [0.5, 0.0])
    with pytest.raises(TypeError, match="correct_a must be"):
        mcnemar_exact(object(), [1])
    assert mcnemar_exact([], [])["p_value"] == 1.0
