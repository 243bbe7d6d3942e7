"""An AERIA market instance: the workload, the users' bids and requirements, and the edge
provider's terms, read from and written to JSON, and checked field by field (``validate.py``)
before any auction runs. The mechanism is described in ``aeria.py`` and ``docs/aeria.md``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefm import EdgefmError
from edgefm.market import validate as V
from edgefm.market.jsonio import read_json, write_json
from edgefm.market.workloads import Workload
from edgefm.market.workloads import load as load_workload

MAX_BID = 1e12  # dollars: far above any real bid, and F2 (a product of bids) stays finite
USER_FIELDS = ("bids", "accuracy_req", "deadline", "complexity", "device_flops", "uplink", "latency")
EIP_FIELDS = ("edge_flops", "unit_cost", "capacity", "rental_price")


class InstanceError(EdgefmError, ValueError):
    """A bad AERIA instance: the message names the field."""


@dataclass
class Instance:
    workload: Workload
    bids: np.ndarray  # reported values ($)
    accuracy_req: np.ndarray  # minimum exit accuracy in (0, 1]
    deadline: np.ndarray  # seconds
    complexity: np.ndarray  # FLOPs multiplier of the task
    device_flops: np.ndarray  # FLOP/s
    uplink: np.ndarray  # bytes/s
    latency: np.ndarray  # one-way network latency, s
    edge_flops: float = 4e12  # FLOP/s the edge gives one job
    unit_cost: float = 1e-3  # $ per GFLOP of edge compute
    capacity: float = float("inf")  # edge GFLOPs available in this round
    # $ per GFLOP/s of edge resource reserved for one job: the resource-weighted auction's rental
    # price and reserve (aeria_resource.py); 1e-4 = unit_cost x a 0.1 s edge window
    rental_price: float = 1e-4
    base: float = 1.2  # consensus grid base c (public, fixed in advance; see docs/aeria.md)
    posted_price: float = 1.0  # the fixed posted-price baseline's service price ($)
    values: np.ndarray | None = None  # true values, for utilities (default: the bids)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in USER_FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=float).reshape(-1))
        n = len(self.bids)
        V.arrays(self, USER_FIELDS, n, "users", InstanceError, "user")
        checks = [
            ("bids", lambda a: (a >= 0) & (a <= MAX_BID), f"in [0, {MAX_BID:g}]"),  # beyond, F2 overflows
            ("accuracy_req", lambda a: (a > 0) & (a <= 1), "in (0, 1]"),
            ("deadline", lambda a: a > 0, "> 0"),
            ("complexity", lambda a: a > 0, "> 0"),
            ("device_flops", lambda a: a > 0, "> 0"),
            ("uplink", lambda a: a > 0, "> 0"),
            ("latency", lambda a: a >= 0, ">= 0"),
        ]
        V.ranges(self, checks, "users", InstanceError)
        V.positive(self, ("edge_flops",), "eip", InstanceError)
        V.positive(self, ("unit_cost", "rental_price"), "eip", InstanceError, allow_zero=True)
        V.positive(self, ("posted_price",), "", InstanceError, allow_zero=True)
        if not self.capacity >= 0:  # +inf: no capacity limit
            raise InstanceError(f"eip.capacity: {self.capacity!r}; expected a non-negative number or null")
        if not self.base > 1:
            raise InstanceError(f"base: {self.base!r}; expected a consensus grid base > 1")
        if self.values is not None:
            self.values = np.asarray(self.values, dtype=float).reshape(-1)
            V.arrays(self, ("values",), n, "users", InstanceError, "user")

    @property
    def n_users(self) -> int:
        return len(self.bids)

    def true_values(self) -> np.ndarray:
        return self.bids if self.values is None else self.values

    def with_bids(self, bids: np.ndarray) -> Instance:
        """The same market with other reported bids (true values kept)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["values"] = self.true_values()
        d["bids"] = bids
        return Instance(**d)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        users = {k: getattr(self, k).tolist() for k in USER_FIELDS}
        if self.values is not None:
            users["values"] = self.values.tolist()
        eip = {k: getattr(self, k) for k in EIP_FIELDS}
        eip["capacity"] = None if np.isinf(self.capacity) else self.capacity
        return {
            "workload": self.workload.to_dict(),
            "users": users,
            "eip": eip,
            "base": self.base,
            "posted_price": self.posted_price,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Instance:
        V.mapping(raw, "instance", InstanceError, required=("workload", "users"))
        wl = raw["workload"]
        if isinstance(wl, str):
            workload = load_workload(wl)
        else:
            workload = Workload.from_dict(V.mapping(wl, "workload", InstanceError))
        users = V.mapping(raw["users"], "users", InstanceError, required=USER_FIELDS)
        kwargs: dict[str, Any] = {k: V.number_list(users[k], f"users.{k}", InstanceError) for k in USER_FIELDS}
        if users.get("values") is not None:
            kwargs["values"] = V.number_list(users["values"], "users.values", InstanceError)
        eip = V.mapping(raw.get("eip", {}), "eip", InstanceError)
        V.known_keys(eip, EIP_FIELDS, "eip", InstanceError)
        for k, v in eip.items():
            kwargs[k] = float("inf") if k == "capacity" and v is None else V.number(v, f"eip.{k}", InstanceError)
        for k in ("base", "posted_price"):
            if k in raw:
                kwargs[k] = V.number(raw[k], k, InstanceError)
        return V.construct(cls, {"workload": workload, **kwargs, "extra": raw.get("extra", {})}, InstanceError)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Instance:
        return cls.from_dict(read_json(path, InstanceError))
