"""A PRINCE market instance: tenants (split fine-tuning jobs with a target, a deadline and a
budget), devices (data shares, per-round costs and times, effort curvature, gradient norms), read
from and written to JSON and checked field by field (``validate.py``) before any solver runs.
The model is ``prince.py``'s and ``docs/prince.md``'s. numpy only.

Per-(device, tenant) quantities are N x M matrices, stored in JSON as one list per device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefm import EdgefmError
from edgefm.market import validate as V
from edgefm.market.jsonio import read_json, write_json

TENANT_FIELDS = ("eps", "deadline", "budget", "theta", "alpha", "beta", "edge_seconds")
DEVICE_FIELDS = ("gamma",)
MATRIX_FIELDS = ("share", "cost", "g2", "seconds")
Q_MIN = 0.05  # participation probabilities are clamped here in aggregation (fl/participation.py)


class InstanceError(EdgefmError, ValueError):
    """A bad PRINCE instance: the message names the field."""


@dataclass
class Instance:
    # tenants m = 1..M
    eps: np.ndarray  # target: the optimality gap the convergence bound must reach
    deadline: np.ndarray  # D_m, simulated seconds of fine-tuning
    budget: np.ndarray  # B_m, total payment over the whole job
    theta: np.ndarray  # congestion cost per unit of expected load at the tenant's edge server
    alpha: np.ndarray  # convergence-bound constants: R = (alpha sum p^2 G2 / q + beta) / eps
    beta: np.ndarray
    edge_seconds: np.ndarray  # h_m: edge seconds per round added per unit of expected load
    # devices n = 1..N
    gamma: np.ndarray  # effort curvature
    share: np.ndarray  # [N, M] data share p_{n,m} (0: no data for that task)
    cost: np.ndarray  # [N, M] e_{n,m}, cost of one round of participation
    g2: np.ndarray  # [N, M] G2_{n,m}, squared norm of the local gradient at the start
    seconds: np.ndarray  # [N, M] device-side seconds of one round (compute and transfers)
    names: list[str] = field(default_factory=list)
    # coverage floor per tenant: plans whose members hold less of its data are not trusted
    # (R = inf): the bound is calibrated on pilots that held at least this much (default 0: none)
    min_share: np.ndarray | None = None
    # coverage error per tenant, rho: the statistical error of training on all its data as a
    # fraction of the target gap; members holding a share c of its data need 1 / (1 - rho /
    # sqrt(c)) times the rounds, and none reach the target below c = rho**2 (default 0: off)
    coverage_error: np.ndarray | None = None
    q_min: float = Q_MIN
    start_tenant: np.ndarray | None = None  # optional warm start: tenant per device (-1: none)
    start_q: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in TENANT_FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=float).reshape(-1))
        m = len(self.eps)
        if m < 1:
            raise InstanceError("tenants.eps: 0 values; expected at least one tenant")
        V.arrays(self, TENANT_FIELDS, m, "tenants", InstanceError, "tenant")
        self.gamma = np.asarray(self.gamma, dtype=float).reshape(-1)
        n = len(self.gamma)
        V.arrays(self, DEVICE_FIELDS, n, "devices", InstanceError, "device")
        for name in MATRIX_FIELDS:
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != (n, m):
                raise InstanceError(f"devices.{name}: shape {list(arr.shape)}; expected {n} devices x {m} tenants")
            if not np.all(np.isfinite(arr)):
                i, j = (int(k) for k in np.argwhere(~np.isfinite(arr))[0])
                raise InstanceError(f"devices.{name}[{i}][{j}]: {arr[i, j]!r}; expected a finite number")
            setattr(self, name, arr)
        V.ranges(
            self,
            [
                ("eps", lambda a: a > 0, "> 0"),
                ("deadline", lambda a: a > 0, "> 0"),
                ("budget", lambda a: a > 0, "> 0"),
                ("theta", lambda a: a >= 0, ">= 0"),
                ("alpha", lambda a: a >= 0, ">= 0"),
                ("beta", lambda a: a >= 0, ">= 0"),
                ("edge_seconds", lambda a: a >= 0, ">= 0"),
            ],
            "tenants",
            InstanceError,
        )
        V.ranges(self, [("gamma", lambda a: a > 0, "> 0")], "devices", InstanceError)
        for name, ok, expected in (
            ("share", lambda a: a >= 0, ">= 0"),
            ("cost", lambda a: a >= 0, ">= 0"),
            ("g2", lambda a: a >= 0, ">= 0"),
            ("seconds", lambda a: a > 0, "> 0"),
        ):
            arr = getattr(self, name)
            bad = np.argwhere(~ok(arr))
            if len(bad):
                i, j = (int(k) for k in bad[0])
                raise InstanceError(f"devices.{name}[{i}][{j}]: {arr[i, j]!r}; expected {expected}")
        empty = np.flatnonzero(self.share.sum(axis=0) <= 0)
        if len(empty) and n:
            raise InstanceError(f"devices.share: tenant {int(empty[0])} has no device with data; expected some > 0")
        self.min_share = np.zeros(m) if self.min_share is None else np.asarray(self.min_share, dtype=float).reshape(-1)
        V.arrays(self, ("min_share",), m, "tenants", InstanceError, "tenant")
        V.ranges(self, [("min_share", lambda a: (a >= 0) & (a <= 1), "in [0, 1]")], "tenants", InstanceError)
        rho = self.coverage_error
        self.coverage_error = np.zeros(m) if rho is None else np.asarray(rho, dtype=float).reshape(-1)
        V.arrays(self, ("coverage_error",), m, "tenants", InstanceError, "tenant")
        V.ranges(self, [("coverage_error", lambda a: (a >= 0) & (a < 1), "in [0, 1)")], "tenants", InstanceError)
        if not 0 < self.q_min <= 1:
            raise InstanceError(f"q_min: {self.q_min!r}; expected a probability in (0, 1]")
        if not self.names:
            self.names = [f"tenant{j}" for j in range(m)]
        if len(self.names) != m or not all(isinstance(s, str) for s in self.names):
            raise InstanceError(f"tenants.names: {self.names!r}; expected {m} strings")
        self._check_start(n, m)

    def _check_start(self, n: int, m: int) -> None:
        if (self.start_tenant is None) != (self.start_q is None):
            raise InstanceError("start: give both tenant and q, or neither")
        if self.start_q is None:
            return
        self.start_tenant = np.asarray(self.start_tenant, dtype=float).reshape(-1)
        self.start_q = np.asarray(self.start_q, dtype=float).reshape(-1)
        for name in ("start_tenant", "start_q"):
            arr = getattr(self, name)
            if len(arr) != n:
                raise InstanceError(f"start.{name[6:]}: {len(arr)} values; expected one per device ({n})")
        t, q = self.start_tenant, self.start_q
        bad = np.flatnonzero((t != np.round(t)) | (t < -1) | (t >= m))
        if len(bad):
            raise InstanceError(f"start.tenant[{int(bad[0])}]: {t[bad[0]]!r}; expected a tenant index or -1")
        bad = np.flatnonzero(~((q >= 0) & (q <= 1)))  # NaN fails too
        if len(bad):
            raise InstanceError(f"start.q[{int(bad[0])}]: {q[bad[0]]!r}; expected a probability in [0, 1]")
        self.start_tenant = t.astype(int)

    @property
    def n_devices(self) -> int:
        return len(self.gamma)

    @property
    def n_tenants(self) -> int:
        return len(self.eps)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tenants": {
                "names": list(self.names),
                **{k: getattr(self, k).tolist() for k in TENANT_FIELDS},
                "min_share": self.min_share.tolist(),
                "coverage_error": self.coverage_error.tolist(),
            },
            "devices": {
                "gamma": self.gamma.tolist(),
                **{k: getattr(self, k).tolist() for k in MATRIX_FIELDS},
            },
            "q_min": self.q_min,
            "extra": self.extra,
        }
        if self.start_q is not None:
            out["start"] = {"tenant": self.start_tenant.tolist(), "q": self.start_q.tolist()}
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Instance:
        V.mapping(raw, "instance", InstanceError, required=("tenants", "devices"))
        V.known_keys(raw, ("tenants", "devices", "q_min", "start", "extra"), "", InstanceError)
        tenants = V.mapping(raw["tenants"], "tenants", InstanceError, required=TENANT_FIELDS)
        V.known_keys(tenants, (*TENANT_FIELDS, "names", "min_share", "coverage_error"), "tenants", InstanceError)
        devices = V.mapping(raw["devices"], "devices", InstanceError, required=DEVICE_FIELDS + MATRIX_FIELDS)
        V.known_keys(devices, DEVICE_FIELDS + MATRIX_FIELDS, "devices", InstanceError)
        kw: dict[str, Any] = {k: V.number_list(tenants[k], f"tenants.{k}", InstanceError) for k in TENANT_FIELDS}
        kw["gamma"] = V.number_list(devices["gamma"], "devices.gamma", InstanceError)
        for k in MATRIX_FIELDS:
            rows = devices[k]
            if not isinstance(rows, list):
                raise InstanceError(f"devices.{k}: {V.short(rows)}; expected a list with one list per device")
            kw[k] = [V.number_list(r, f"devices.{k}[{i}]", InstanceError) for i, r in enumerate(rows)]
            lengths = {len(r) for r in kw[k]}
            if len(lengths) > 1:
                i = next(i for i, r in enumerate(kw[k]) if len(r) != len(kw[k][0]))
                raise InstanceError(f"devices.{k}[{i}]: {len(kw[k][i])} values; expected {len(kw[k][0])}")
            kw[k] = np.array(kw[k]).reshape(len(rows), -1 if rows else len(kw["eps"]))
        if "names" in tenants:
            kw["names"] = tenants["names"]
        if "min_share" in tenants:
            kw["min_share"] = V.number_list(tenants["min_share"], "tenants.min_share", InstanceError)
        if "coverage_error" in tenants:
            kw["coverage_error"] = V.number_list(tenants["coverage_error"], "tenants.coverage_error", InstanceError)
        if "q_min" in raw:
            kw["q_min"] = V.number(raw["q_min"], "q_min", InstanceError)
        if "start" in raw:
            start = V.mapping(raw["start"], "start", InstanceError, required=("tenant", "q"))
            kw["start_tenant"] = V.number_list(start["tenant"], "start.tenant", InstanceError)
            kw["start_q"] = V.number_list(start["q"], "start.q", InstanceError)
        return V.construct(cls, {**kw, "extra": raw.get("extra", {})}, InstanceError)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Instance:
        return cls.from_dict(read_json(path, InstanceError))


# ----------------------------------------------------------------------------- generated markets

DOLLARS_PER_JOULE = 0.15 / 3.6e6  # $0.15 per kWh
TIER_MIX = {"iot_camera": 0.1, "low_end_phone": 0.3, "high_end_phone": 0.3, "embedded_gpu": 0.2, "laptop": 0.1}


def load_tenants() -> list[dict[str, Any]]:
    """The tenants' measured per-round work (``market/data/prince_tenants.json``)."""
    return read_json(Path(__file__).resolve().parent / "data" / "prince_tenants.json", InstanceError)["tenants"]


def round_costs(devices: list, work: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per device and tenant, a round's device-side seconds and cost (d, e: [N, M]); per tenant,
    the edge seconds per unit of load h and the congestion price theta (``edge/devices.py``
    profiles, the tenants' measured per-round work)."""
    from edgefm.edge.devices import TIERS

    flops = np.array([d.flops_per_s for d in devices])
    up, down = np.array([d.uplink_bps for d in devices]), np.array([d.downlink_bps for d in devices])
    latency = np.array([d.latency_s for d in devices])
    dollars_s = np.array([d.cost_per_hour for d in devices]) / 3600
    ef, eb = np.array([d.energy_per_flop for d in devices]), np.array([d.energy_per_byte for d in devices])
    seconds, cost = np.zeros((len(devices), len(work))), np.zeros((len(devices), len(work)))
    for m, w in enumerate(work):
        moved = w["bytes_up"] + w["bytes_down"]
        seconds[:, m] = w["device_flops"] / flops + w["bytes_up"] / up + w["bytes_down"] / down
        seconds[:, m] += 2 * w["messages"] * latency
        cost[:, m] = seconds[:, m] * dollars_s + (w["device_flops"] * ef + moved * eb) * DOLLARS_PER_JOULE
    h = np.array([w["edge_flops"] for w in work]) / TIERS["edge_server"].flops_per_s
    return seconds, cost, h, h * dollars_s.mean()


def generate(n_devices: int, n_tenants: int, rng: np.random.Generator, tenants: list[dict] | None = None) -> Instance:
    """A random market over a sampled device population (``edge/devices.py`` tiers, jittered)
    and the tenants' measured per-round work, cycled when ``n_tenants`` exceeds them.

    Device n's round at tenant m takes its FLOPs over the device's rate plus its bytes over the
    links; its cost e is that time at the device's hourly price plus its energy at $0.15/kWh.
    The edge adds h_m = edge FLOPs / the edge server's rate per unit of load; theta_m prices that
    wait at the population's mean cost per second. Each device holds data for one or two tenants
    (log-normal sizes); gamma_n is its mean round cost times U(0.5, 2); G2 is log-normal around
    the tenant's start gradient scale. Until pilots calibrate a tenant's bound, alpha_m makes the
    variance term a U(0.5, 0.9) share of the bound at full participation. eps_m makes full
    participation of every eligible device need U(20, 60) rounds; the deadline is U(1.5, 4) times that job's time, the budget
    U(0.8, 2) times its cost at q = 1. docs/prince.md lists these choices."""
    from edgefm.edge.devices import sample_population

    if n_devices < 1 or n_tenants < 1:
        raise InstanceError(f"generate: {n_devices} devices, {n_tenants} tenants; expected at least one of each")
    table = tenants if tenants is not None else load_tenants()
    work = [table[m % len(table)] for m in range(n_tenants)]
    devices = sample_population(n_devices, TIER_MIX, 0.2, rng)
    seconds, cost, h, theta = round_costs(devices, work)
    share = np.zeros((n_devices, n_tenants))
    for n in range(n_devices):
        for m in rng.choice(n_tenants, size=min(n_tenants, int(rng.integers(1, 3))), replace=False):
            share[n, m] = rng.lognormal(0.0, 0.8)
    for m in np.flatnonzero(share.sum(axis=0) == 0):
        share[int(rng.integers(n_devices)), m] = 1.0
    share /= share.sum(axis=0, keepdims=True)
    g2 = np.array([w["g2"] for w in work])[None, :] * rng.lognormal(0.0, 0.5, (n_devices, n_tenants))
    g2 *= share > 0
    gamma = cost.mean(axis=1) * rng.uniform(0.5, 2.0, n_devices)
    alpha, beta = np.array([w["alpha"] for w in work]), np.array([w["beta"] for w in work])
    eps, deadline, budget = np.zeros(n_tenants), np.zeros(n_tenants), np.zeros(n_tenants)
    for m in range(n_tenants):
        on = share[:, m] > 0
        if not work[m].get("calibrated"):  # the variance term is a U(0.5, 0.9) share of the bound at q = 1
            rho = rng.uniform(0.5, 0.9)
            alpha[m] = beta[m] * rho / (1 - rho) / np.sum(share[on, m] ** 2 * g2[on, m])
        full = alpha[m] * np.sum(share[on, m] ** 2 * g2[on, m]) + beta[m]  # eps * rounds at q = 1
        r_full = rng.uniform(20, 60)
        eps[m] = full / r_full
        tau_full = seconds[on, m].max() + h[m] * on.sum()
        deadline[m] = r_full * tau_full * rng.uniform(1.5, 4.0)
        per_round = np.sum(cost[on, m] + theta[m] * on.sum() + gamma[on] / 2)
        budget[m] = r_full * per_round * rng.uniform(0.8, 2.0)
    return Instance(
        eps=eps,
        deadline=deadline,
        budget=budget,
        theta=theta,
        alpha=alpha,
        beta=beta,
        edge_seconds=h,
        gamma=gamma,
        share=share,
        cost=cost,
        g2=g2,
        seconds=seconds,
        names=[f"{w['name']}#{m}" if n_tenants > len(table) else w["name"] for m, w in enumerate(work)],
        extra={"generated": {"devices": n_devices, "tenants": n_tenants}, "workloads": work},
    )
