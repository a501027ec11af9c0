"""Monitoring: pure, vectorised functions over columns that say whether data still looks
like what the model learned from, and how well the model is likely doing before the
labels arrive. Nothing here reads the store; callers pass tables or profiles in and
get reports back.
"""

from __future__ import annotations

from evertrain.monitor.decide import adjust_p_values
from evertrain.monitor.estimate import Estimate, PerformanceEstimator, estimate_performance
from evertrain.monitor.multivariate import MultivariateResult, domain_classifier_test, pca_reconstruction_test
from evertrain.monitor.profiles import CategoricalProfile, NumericProfile, Profile, profile
from evertrain.monitor.report import drift
from evertrain.monitor.tests import DriftTest, TestResult, available_tests, get_test, register_test
from evertrain.monitor.verdicts import ColumnDrift, DriftReport

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
