"""How far a test set can tell accuracies apart (Wilson intervals for one run, McNemar's exact test for two),
and how far alternating timing rounds can tell two steps apart (Wilcoxon's signed-rank test).

Two runs scored on the same test items are compared through the items they disagree on
(McNemar): with ``b`` items only A gets right and ``c`` only B gets right, under "equally
accurate" each disagreement goes either way with probability 1/2, so the two-sided p-value is
the binomial test of ``b`` in ``b + c``. That is stricter about "different" than laying two
intervals side by side, and it uses the pairing that separate intervals throw away.
"""
from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import binomtest, wilcoxon


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``correct / n``, as fractions in [0, 1]."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (items only A, only B got right); 1.0 without any."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_rounds(a_ms: Sequence[float], b_ms: Sequence[float]) -> tuple[int, int, float]:
    """Rounds where A was faster, rounds, and the two-sided Wilcoxon signed-rank p of A's and B's times per round.

    The median ratio of alternating rounds says how much faster; this says whether the rounds agree:
    a host whose speed drifts by a third between rounds can put a 5% median gain inside its noise.
    """
    if len(a_ms) != len(b_ms) or len(a_ms) < 2:
        raise ValueError(f"need two equally long lists of at least 2 rounds, got {len(a_ms)} and {len(b_ms)}")
    faster = sum(a < b for a, b in zip(a_ms, b_ms))
    p = 1.0 if all(a == b for a, b in zip(a_ms, b_ms)) else float(wilcoxon(a_ms, b_ms).pvalue)
    return faster, len(a_ms), p
