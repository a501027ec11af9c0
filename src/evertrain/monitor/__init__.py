"""Monitoring: pure, vectorised functions over columns that say whether data still looks
like what the model learned from, and how well the model is likely doing before the
labels arrive. Nothing here reads the store; callers pass tables or profiles in and
get reports back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evertrain._lazy import lazy_exports

# Name -> the module that defines it, imported on first use: ``evertrain drift`` needs
# the report and the profiles, not the estimator's or the multivariate tests' scipy.
_LAZY = {
    "adjust_p_values": "evertrain.monitor.decide",
    "Estimate": "evertrain.monitor.estimate",
    "PerformanceEstimator": "evertrain.monitor.estimate",
    "estimate_performance": "evertrain.monitor.estimate",
    "MultivariateResult": "evertrain.monitor.multivariate",
    "domain_classifier_test": "evertrain.monitor.multivariate",
    "pca_reconstruction_test": "evertrain.monitor.multivariate",
    "CategoricalProfile": "evertrain.monitor.profiles",
    "NumericProfile": "evertrain.monitor.profiles",
    "Profile": "evertrain.monitor.profiles",
    "profile": "evertrain.monitor.profiles",
    "drift": "evertrain.monitor.report",
    "DriftTest": "evertrain.monitor.tests",
    "TestResult": "evertrain.monitor.tests",
    "available_tests": "evertrain.monitor.tests",
    "get_test": "evertrain.monitor.tests",
    "register_test": "evertrain.monitor.tests",
    "ColumnDrift": "evertrain.monitor.verdicts",
    "DriftReport": "evertrain.monitor.verdicts",
}

if TYPE_CHECKING:
    from evertrain.monitor.decide import adjust_p_values
    from evertrain.monitor.estimate import Estimate, PerformanceEstimator, estimate_performance
    from evertrain.monitor.multivariate import (
        MultivariateResult,
        domain_classifier_test,
        pca_reconstruction_test,
    )
    from evertrain.monitor.profiles import CategoricalProfile, NumericProfile, Profile, profile
    from evertrain.monitor.report import drift
    from evertrain.monitor.tests import DriftTest, TestResult, available_tests, get_test, register_test
    from evertrain.monitor.verdicts import ColumnDrift, DriftReport

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CategoricalProfile",
    "ColumnDrift",
    "DriftReport",
    "DriftTest",
    "Estimate",
    "MultivariateResult",
    "NumericProfile",
    "PerformanceEstimator",
    "Profile",
    "TestResult",
    "adjust_p_values",
    "available_tests",
    "domain_classifier_test",
    "drift",
    "estimate_performance",
    "get_test",
    "pca_reconstruction_test",
    "profile",
    "register_test",
]
