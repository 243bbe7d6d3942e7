"""Several tenants over one device population and one edge server (PRINCE's setting).

PRINCE (Li, Hu, Min, Huang; arXiv 2503.04971) has M tenants fine-tune their own foundation
models on one pool of edge devices, each device serving at most one tenant, and one edge
server running the tenants' edge parts. A tenant is a run config (its model, task and method),
a number of devices (or the population's device indices it gets), a target on its headline
metric (accuracy: reached at or above; log-perplexity: at or below) and a deadline in
simulated seconds. A tenants file::

    seed: 0
    edge: {tiers: {low_end_phone: 0.3, ...}, jitter: 0.2}   # the one population's mix
    tenants:
      - {name: vit_mnist, config: splitfed_mnist.yaml, clients: 6, target: 0.6, deadline: 400}
      - {name: ..., config: ..., devices: [6, 7, 8], set: [rounds=4], ...}

``config`` paths are relative to the tenants file; ``set`` holds overrides. The population is
sampled once (``edge/devices.py``) with as many devices as the tenants take; a tenant without
``devices`` takes the next ``clients`` in order. Every tenant's data is dealt to the whole
population (its ``partition``), and a tenant trains only on the shares of the devices serving
it: a device's data is its own. Each tenant is an ordinary run (its own folder
under the output, with its summary and report); what they share is the edge server: a device's
edge time grows with every device the server serves in that round, for any tenant
(``Strategy.edge_demand`` / ``edge_co_load``). A tenant trains until it reaches its target or its simulated clock passes its deadline
(its ``rounds`` is the cap), since rounds after either are time it would pay for and not use.
``tenants.json`` gives each tenant's metric, whether and when (simulated seconds) it reached its
target, and whether that met its deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgefm import EdgefmError, config
from edgefm.config import ConfigError, RunConfig
from edgefm.edge.devices import DeviceProfile, sample_population
from edgefm.fl.events import seed_for

TENANT_KEYS = ("name", "config", "clients", "devices", "target", "deadline", "set")


@dataclass
class Tenant:
    name: str
    cfg: RunConfig
    devices: list[int]  # indices into the shared population
    target: float
    deadline: float


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        raise ConfigError(f"{path}: not valid YAML (line {line}): {getattr(exc, 'problem', exc)}") from None


def is_tenants_file(path: Path | None) -> bool:
    if path is None or not Path(path).is_file():
        return False
    raw = _read(path)
    return isinstance(raw, dict) and "tenants" in raw


def load(path: Path, overrides: list[str] = ()) -> tuple[list[Tenant], list[DeviceProfile], int]:
    """The tenants, the shared population and the seed. ``overrides`` (``key=value``) apply to
    every tenant's config (``seed=`` also reseeds the population)."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("tenants"), list) or not raw["tenants"]:
        raise ConfigError(f"{path}: tenants: expected a non-empty list of tenants")
    unknown = sorted(set(raw) - {"seed", "edge", "tenants"})
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key; expected seed, edge, tenants")
    seed = int(raw.get("seed", 0))
    for o in overrides:
        if o.startswith("seed="):
            seed = int(o.split("=", 1)[1])
    edge = config.loads(yaml.safe_dump({"edge": raw.get("edge") or {}})).edge
    entries, taken = [], 0
    for k, t in enumerate(raw["tenants"]):
        where = f"tenants[{k}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: expected a mapping with {', '.join(TENANT_KEYS)}")
        bad = sorted(set(t) - set(TENANT_KEYS))
        if bad:
            raise ConfigError(f"{where}.{bad[0]}: unknown key; expected one of {', '.join(TENANT_KEYS)}")
        for key in ("name", "config", "target", "deadline"):
            if key not in t:
                raise ConfigError(f"{where}.{key}: missing")
        if "devices" in t:
            devices = [int(i) for i in t["devices"]]
        else:
            n = int(t.get("clients", 0))
            if n < 1:
                raise ConfigError(f"{where}.clients: {t.get('clients')!r}; expected devices: [...] or clients >= 1")
            devices = list(range(taken, taken + n))
        if not devices:
            raise ConfigError(f"{where}.devices: []; expected at least one device")
        taken = max(taken, max(devices) + 1)
        entries.append((k, t, devices))
    total = max(i for _, _, ds in entries for i in ds) + 1
    tenants = []
    for k, t, devices in entries:
        where = f"tenants[{k}]"
        # the tenant's data is dealt to the whole population; it trains on its devices' shares
        sets = [*t.get("set", []), *overrides, f"seed={seed}", f"clients={total}"]
        cfg = config.load(path.parent / t["config"], sets)
        if not math.isfinite(float(t["deadline"])) or float(t["deadline"]) <= 0:
            raise ConfigError(f"{where}.deadline: {t['deadline']!r}; expected simulated seconds > 0")
        tenants.append(Tenant(str(t["name"]), cfg, devices, float(t["target"]), float(t["deadline"])))
    used = [i for t in tenants for i in t.devices]
    if len(used) != len(set(used)):
        twice = sorted({i for i in used if used.count(i) > 1})
        raise ConfigError(f"tenants: device {twice[0]} serves two tenants; expected each device to serve at most one")
    if len({t.name for t in tenants}) != len(tenants):
        raise ConfigError("tenants: two tenants share a name; expected distinct names")
    population = sample_population(total, edge.tiers, edge.jitter, np.random.default_rng(seed_for(seed, 13)))
    return tenants, population, seed


def devices_of(tenant: Tenant, population: list[DeviceProfile]) -> list[DeviceProfile]:
    """The tenant's devices, numbered 0..n-1 as its run's clients."""
    return [replace(population[i], device_id=k) for k, i in enumerate(tenant.devices)]


def share_edge(strategies: list) -> list[float]:
    """Make every strategy count the devices the others have the edge server serve. Returns
    each tenant's last round (inf until it is known): the runner sets it once a tenant stops,
    so the tenants trained after it see its load end (those trained before see it to the cap)."""
    last = [math.inf] * len(strategies)
    for k, s in enumerate(strategies):
        s.edge_co_load = lambda rnd, k=k: sum(
            o.edge_demand(rnd) for j, o in enumerate(strategies) if j != k and rnd <= last[j]
        )
    return last


def reached(metric: str, value: float, target: float) -> bool:
    """Whether ``value`` of ``metric`` meets ``target`` (log-perplexity: at or below; else at or above)."""
    return value <= target if metric == "log_ppl" else value >= target


def finished(tenant: Tenant) -> Callable[[dict[str, Any]], bool]:
    """A tenant's stop rule: it stops paying for rounds once it has reached its target or its
    simulated clock has passed its deadline (``rounds`` stays the cap)."""

    def stop(summary: dict[str, Any]) -> bool:
        metric = "log_ppl" if "log_ppl" in summary else "accuracy"
        hit = metric in summary and reached(metric, summary[metric], tenant.target)
        return hit or summary["sim_elapsed_s"] >= tenant.deadline

    return stop


def time_to_target(rounds: list[dict[str, Any]], metric: str, target: float) -> dict[str, Any]:
    """The first round whose ``metric`` reaches ``target`` and the simulated seconds by then."""
    for r in rounds:
        if metric in r and reached(metric, r[metric], target):
            return {"reached": True, "round": r["round"], "seconds": r["sim_elapsed_s"]}
    return {"reached": False, "round": None, "seconds": None}


def outcome(tenant: Tenant, rounds: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    hit = time_to_target(rounds, metric, tenant.target)
    return {
        "name": tenant.name,
        "metric": metric,
        "target": tenant.target,
        "final": rounds[-1].get(metric) if rounds else None,
        **{f"target_{k}": v for k, v in hit.items()},
        "deadline": tenant.deadline,
        "deadline_met": bool(hit["reached"] and hit["seconds"] <= tenant.deadline),
        "sim_seconds": rounds[-1]["sim_elapsed_s"] if rounds else 0.0,
        "devices": tenant.devices,
    }


def check_free(out: Path, tenants: list[Tenant]) -> None:
    from edgefm.fl import checkpoint

    for t in tenants:
        if checkpoint.exists(out / t.name) or (out / t.name / "summary.json").exists():
            raise EdgefmError(f"--out {str(out)!r}: tenant {t.name} already has a run there; expected a new folder")
