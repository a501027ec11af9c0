"""The two-sided Kolmogorov-Smirnov distribution's survival function, without ``scipy.stats``.

``scipy.stats.kstwo.sf(d, n)`` is the p-value of every profiled KS test, but importing
``scipy.stats`` costs more CPU time than profiling a million-row column, and a one-off
``evertrain drift`` pays it on every run. For ``n`` above 140 (and above 100,000 for small
distances) scipy evaluates it with two formulas only: the Pelz-Good expansion and twice
Smirnov's one-sided tail (``scipy.special.smirnov``). :func:`kstwo_sf` is scipy 1.17's
``_kolmogn(n, d, cdf=False)`` for that range, transcribed branch for branch, so the
p-values are scipy's (a test holds them equal on a grid); everything else (small ``n``,
the exact corner cases) goes to ``scipy.stats`` itself.

Simard and L'Ecuyer (2011), Computing the two-sided Kolmogorov-Smirnov distribution;
Pelz and Good (1976), Approximating the lower tail-areas of the Kolmogorov-Smirnov
one-sample statistic.
"""

from __future__ import annotations

import math

import numpy as np

#: Above this ``n`` scipy uses only Pelz-Good and Smirnov's tail (its small-n methods below).
LARGE_N = 140
#: Up to this ``n`` scipy uses Durbin's matrix method for small distances (left to scipy).
DMTW_MAX_N = 100_000
_PI_SQUARED = math.pi**2
_PI_FOUR = math.pi**4
_PI_SIX = math.pi**6
_SQRT2PI = math.sqrt(2 * math.pi)
_SQRT3 = math.sqrt(3)
_MIN_LOG = math.log(np.finfo(np.float64).tiny)


def kstwo_sf(d: float, n: float) -> float:
    """``scipy.stats.kstwo.sf(d, n)``: P(D_n >= d) for the two-sided one-sample statistic."""
    if not (n == int(n) and n > 0) or math.isnan(d):
        return math.nan
    if d >= 1.0:
        return 0.0
    if d <= 0.0:
        return 1.0
    t = n * d
    nxsquared = t * d
    small_n_method = n <= DMTW_MAX_N and n * d**1.5 <= 1.4 and nxsquared < 2.2
    if n <= LARGE_N or t <= 1.0 or t >= n - 1 or d >= 0.5 or small_n_method:
        from scipy import stats  # scipy's own evaluation: small n, corner cases, Durbin's matrix

        return float(stats.kstwo.sf(d, n))
    if nxsquared >= 370.0:
        return 0.0
    if nxsquared >= 2.2:
        from scipy import special

        return _clip(2 * float(special.smirnov(n, d)))
    return _clip(1.0 - _pelz_good_cdf(n, d))


def _clip(p: float) -> float:
    return min(max(p, 0.0), 1.0)


def _pelz_good_cdf(n: float, x: float) -> float:
    """Pelz-Good approximation of P(D_n <= x), as scipy's ``_kolmogn_PelzGood``."""
    z = math.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z**2, z**3, z**4, z**6
    qlog = -_PI_SQUARED / 8 / zsquared
    if qlog < _MIN_LOG:
        return 0.0
    q = math.exp(qlog)
    k1a = -zsquared
    k1b = _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z**8
    terms = np.zeros(4)
    # Horner's scheme for sum c_i q^(i^2) over odd integers.
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):
        m = 2 * k - 1
        msquared, mfour, msix = m**2, m**4, m**6
        qpower = np.power(q, 8 * k)
        coeffs = np.array(
            [
                1.0,
                k1a + k1b * msquared,
                k2a + k2b * msquared + k2c * mfour,
                k3a + k3b * msquared + k3c * mfour + k3d * msix,
            ]
        )
        terms *= qpower
        terms += coeffs
    terms *= q
    terms *= _SQRT2PI
    terms /= np.array([z, 6 * zfour, 72 * z**7, 6480 * z**10])
    # The other sum, over all integers k, for K2 and K3.
    q = math.exp(-_PI_SQUARED / 2 / zsquared)
    ks = np.arange(maxk, 0, -1)
    ksquared = ks**2
    sqrt3z = _SQRT3 * z
    kspi = np.pi * ks
    qpowers = q**ksquared
    k2extra = np.sum(ksquared * qpowers) * _PI_SQUARED * _SQRT2PI / (-36 * zthree)
    terms[2] += k2extra
    k3extra = np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpowers)
    terms[3] += k3extra * _PI_SQUARED * _SQRT2PI / (216 * zsix)
    terms /= np.power(n * 1.0, np.arange(4) / 2.0)
    return float(sum(terms))


__all__ = ["kstwo_sf"]
