"""Federated methods, one module each. Their configs live in ``configs.py`` (torch-free, and
registered there); each config names its Strategy, imported only when a run is built."""
