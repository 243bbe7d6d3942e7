"""Robustness evaluation: adversarial and out-of-distribution suites, perturbations, metrics."""
