"""An LMaaS market instance: models, customers and shared constants, read from and written to
JSON, and checked field by field (``validate.py``) before any pricing runs. The model itself is
described in ``lmaas.py`` and ``docs/lmaas.md``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgefm import EdgefmError
from edgefm.market import validate as V
from edgefm.market.jsonio import read_json, write_json

MODEL_FIELDS = ("accuracy", "rho", "cost", "train_cost", "p_min", "p_max")
CUSTOMER_FIELDS = ("demand", "distance", "delta", "kappa", "energy_cap", "alpha")
CONSTANTS = ("horizon", "beta", "bandwidth", "power", "snr0", "d0", "path_loss")


class InstanceError(EdgefmError, ValueError):
    """A bad instance: the message names the field and what is expected."""


@dataclass
class Instance:
    """Models and customers as arrays (one entry per model / per customer) plus shared constants."""

    accuracy: np.ndarray  # a_m in (0, 1]
    rho: np.ndarray  # compression ratio, > 0
    cost: np.ndarray  # c_m, operating cost per hour, >= 0
    train_cost: np.ndarray  # K_m, amortised training cost, >= 0
    p_min: np.ndarray
    p_max: np.ndarray
    demand: np.ndarray  # D_i, Mbit of source data per hour, >= 0
    distance: np.ndarray  # d_i, metres, > 0
    delta: np.ndarray  # SNR uncertainty in [0, 1)
    kappa: np.ndarray  # energy price, $ per joule, >= 0
    energy_cap: np.ndarray  # E_i, joules over the rental, > 0
    alpha: np.ndarray  # value weight, $ , >= 0
    horizon: float = 24.0  # T, hours
    beta: float = 1.0  # diminishing returns of rental time, 1/hour
    bandwidth: float = 1.0  # B, MHz (rate in Mbit/s)
    power: float = 0.5  # P, transmit power in watts
    snr0: float = 1e4  # SNR at the reference distance
    d0: float = 10.0  # reference distance, metres
    path_loss: float = 3.0  # eta
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in MODEL_FIELDS + CUSTOMER_FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=float).reshape(-1))
        self.validate()

    @property
    def n_models(self) -> int:
        return len(self.accuracy)

    @property
    def n_customers(self) -> int:
        return len(self.demand)

    def validate(self) -> None:
        if self.n_models == 0:
            raise InstanceError("models: empty; expected at least one model")
        V.arrays(self, MODEL_FIELDS, self.n_models, "", InstanceError, "model")
        V.arrays(self, CUSTOMER_FIELDS, self.n_customers, "", InstanceError, "customer")
        checks = [
            ("accuracy", lambda a: (a > 0) & (a <= 1), "in (0, 1]"),
            ("rho", lambda a: a > 0, "> 0"),
            ("cost", lambda a: a >= 0, ">= 0"),
            ("train_cost", lambda a: a >= 0, ">= 0"),
            ("p_min", lambda a: a >= 0, ">= 0"),
            ("demand", lambda a: a >= 0, ">= 0"),
            ("distance", lambda a: a > 0, "> 0"),
            ("delta", lambda a: (a >= 0) & (a < 1), "in [0, 1)"),
            ("kappa", lambda a: a >= 0, ">= 0"),
            ("energy_cap", lambda a: a > 0, "> 0"),
            ("alpha", lambda a: a >= 0, ">= 0"),
        ]
        V.ranges(self, checks, "", InstanceError)
        bad = np.flatnonzero(self.p_min > self.p_max)
        if len(bad):
            i = int(bad[0])
            raise InstanceError(
                f"p_min[{i}]: {float(self.p_min[i])!r} exceeds p_max[{i}] = {float(self.p_max[i])!r}; expected p_min <= p_max"
            )
        V.positive(self, CONSTANTS, "", InstanceError)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            "models": [{k: float(d[k][j]) for k in MODEL_FIELDS} for j in range(self.n_models)],
            "customers": {k: d[k].tolist() for k in CUSTOMER_FIELDS},
            "constants": {k: float(d[k]) for k in CONSTANTS},
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Instance:
        V.mapping(raw, "instance", InstanceError, required=("models", "customers"))
        models = raw["models"]
        if not isinstance(models, list) or not all(isinstance(x, dict) for x in models):
            raise InstanceError("models: expected a list of objects")
        kwargs: dict[str, Any] = {}
        for k in MODEL_FIELDS:
            missing = [j for j, mdl in enumerate(models) if k not in mdl]
            if missing:
                raise InstanceError(f"models[{missing[0]}].{k}: missing; expected a number")
            kwargs[k] = [V.number(mdl[k], f"models[{j}].{k}", InstanceError) for j, mdl in enumerate(models)]
        customers = V.mapping(raw["customers"], "customers", InstanceError, required=CUSTOMER_FIELDS)
        for k in CUSTOMER_FIELDS:
            kwargs[k] = V.number_list(customers[k], f"customers.{k}", InstanceError)
        constants = V.mapping(raw.get("constants", {}), "constants", InstanceError)
        V.known_keys(constants, CONSTANTS, "constants", InstanceError)
        kwargs.update({k: V.number(v, f"constants.{k}", InstanceError) for k, v in constants.items()})
        return V.construct(cls, {**kwargs, "extra": raw.get("extra", {})}, InstanceError)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Instance:
        return cls.from_dict(read_json(path, InstanceError))
