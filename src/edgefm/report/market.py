"""A page per market outcome (``edgefm market ... --out FILE.json`` writes ``FILE.html`` beside
it): the headline, the figure that shows what the mechanism did, and a table, in the same style
and units as a training run's report."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgefm.report import plots, units
from edgefm.report.html import img_tag, table_html, write_page

plt = plots.plt


def _figure(draw, size=(10, 3.4)) -> str:
    fig, axes = plt.subplots(1, 2, figsize=size)
    draw(*axes)
    with tempfile.TemporaryDirectory() as tmp:
        return img_tag(plots.save(fig, Path(tmp) / "market.png"))


def _page(title: str, lead: str, parts: list[str], path: Path) -> Path:
    return write_page(path, title, [f"<h1>edgefm — {html.escape(title)}</h1><p>{html.escape(lead)}</p>", *parts])


def lmaas_page(inst, result: dict[str, Any], path: Path) -> Path:
    choices = np.asarray(result["choices"])
    durations = np.asarray(result["durations"])
    prices = np.asarray(result["prices"])
    rows = []
    for m in range(inst.n_models):
        renting = choices == m
        hours = float(durations[renting].sum())
        rows.append({"model": m, "accuracy": float(inst.accuracy[m]), "cost / h": units.dollars(inst.cost[m]),
                     "price / h": units.dollars(prices[m]), "customers": int(renting.sum()),
                     "hours rented": f"{hours:,.1f}", "margin": units.dollars(hours * (prices[m] - inst.cost[m]))})  # fmt: skip

    def draw(a1, a2):
        x = np.arange(inst.n_models)
        a1.bar(x - 0.2, inst.cost, 0.4, color=plots.colour(0), label="operating cost / h")
        a1.bar(x + 0.2, prices, 0.4, color=plots.colour(1), label="IMP price / h")
        a1.set(xlabel="model", ylabel="$ per hour", title="Prices against costs")
        a1.legend(fontsize=7)
        a2.bar(x, [r["customers"] for r in rows], color=plots.colour(2))
        a2.set(xlabel="model", ylabel="customers", title=f"Customers per model ({int((choices < 0).sum())} rent none)")
        for ax in (a1, a2):
            ax.set_xticks(x)
            ax.grid(alpha=0.3, axis="y")

    lead = (
        f"{inst.n_customers:,} customers, {inst.n_models} models: seller profit "
        f"{units.dollars(result['seller_profit'])} after {result['iterations']} price moves."
    )
    return _page("LMaaS pricing", lead, [_figure(draw), table_html(rows, list(rows[0]))], path)


def aeria_page(inst, outcome, path: Path) -> Path:
    won = np.zeros(inst.n_users, dtype=bool)
    won[outcome.winners] = True
    exits = np.asarray(outcome.plans["exit"])
    rows = []
    for e in sorted(set(exits[exits >= 0].tolist())):
        mine = exits == e
        rows.append({"exit": e, "accuracy": float(inst.workload.exit_accuracy[e]), "users": int(mine.sum()),
                     "winners": int((mine & won).sum()), "paid": units.dollars(float(outcome.payments[mine].sum()))})  # fmt: skip

    def draw(a1, a2):
        order = np.argsort(-inst.bids)
        a1.plot(range(inst.n_users), inst.bids[order], color=plots.colour(0), label="bid")
        a1.scatter(np.flatnonzero(won[order]), outcome.payments[order][won[order]], s=8, color=plots.colour(1),
                   label="payment (winners)")  # fmt: skip
        a1.set(xlabel="users, highest bid first", ylabel="$", title="Bids and what winners pay")
        a1.legend(fontsize=7)
        a2.bar([str(r["exit"]) for r in rows], [r["users"] for r in rows], color=plots.colour(2), label="feasible")
        a2.bar([str(r["exit"]) for r in rows], [r["winners"] for r in rows], color=plots.colour(3), label="winners")
        a2.set(xlabel="exit", ylabel="users", title="Plans by exit")
        a2.legend(fontsize=7)
        for ax in (a1, a2):
            ax.grid(alpha=0.3)

    lead = (
        f"{len(outcome.winners)} of {inst.n_users} users win ({outcome.admitted} admitted); service revenue "
        f"{units.dollars(outcome.revenue)} (target {units.dollars(outcome.target)}), the edge paid "
        f"{units.dollars(outcome.eip_payment)}."
    )
    parts = [_figure(draw), table_html(rows, list(rows[0])) if rows else "<p>No user has a feasible plan.</p>"]
    return _page(f"AERIA auction ({inst.workload.name})", lead, parts, path)


def prince_page(inst, result: dict[str, Any], path: Path) -> Path:
    tenants = result["tenants"]
    rows = [{"tenant": t["name"], "devices": t["members"], "load": t["load"],
             "time": units.seconds(t["time"]) if t["time"] is not None else "—",
             "deadline": units.seconds(t["deadline"]), "paid": units.dollars(t["payment"]),
             "budget": units.dollars(t["budget"])} for t in tenants]  # fmt: skip
    chosen = np.asarray(result["tenant"])
    q = np.asarray(result["q"])

    def draw(a1, a2):
        names = [t["name"] for t in tenants]
        a1.bar(names, [t["payment"] for t in tenants], color=[plots.colour(k) for k in range(len(tenants))])
        a1.scatter(names, [t["budget"] for t in tenants], marker="_", s=400, color="k", label="budget")
        a1.set(ylabel="$", title="Payments against budgets")
        a1.legend(fontsize=7)
        for k in range(len(tenants)):
            a2.hist(q[chosen == k], bins=20, range=(0, 1), alpha=0.6, color=plots.colour(k), label=tenants[k]["name"])
        a2.set(xlabel="participation probability q", ylabel="devices", title="Devices' participation by tenant")
        a2.legend(fontsize=7)
        for ax in (a1, a2):
            ax.grid(alpha=0.3, axis="y")

    lead = (
        f"{inst.n_devices:,} devices, {inst.n_tenants} tenants: {result['sweeps']} price sweeps "
        f"({'converged' if result['converged'] else 'not converged'}), device regret {result['device_regret']:.1e}."
    )
    return _page("PRINCE incentives", lead, [_figure(draw), table_html(rows, list(rows[0]))], path)


__all__ = ["aeria_page", "lmaas_page", "prince_page"]
