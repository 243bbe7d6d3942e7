"""Federated methods, one module each; importing this package registers them all."""

from edgefm.algorithms import centralized, fedavg, fedms, fedprox, local, raffm  # noqa: F401
