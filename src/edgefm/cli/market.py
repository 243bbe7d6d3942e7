"""``edgefm market``: the markets (numpy only, never torch): LMaaS pricing, AERIA auctions and
PRINCE incentives."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgefm import EdgefmError
from edgefm.cli.app import app, check_out, console, fail, seed_option, write_json

market_app = typer.Typer(no_args_is_help=True, help="Markets: pricing, incentives and auctions (numpy only).")
app.add_typer(market_app, name="market")


def _parse_pair(text: str, option: str, names: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != names.count(",") + 1 or any(v < 0 for v in values):
        fail(f"{option} {text!r}: expected {names} as non-negative integers, e.g. 1000,4")
    return values


def _page(out: Path) -> Path:
    """The outcome's page beside its JSON: FILE.json -> FILE.html."""
    return out.with_suffix(".html") if out.suffix != ".html" else out.with_name(out.stem + ".page.html")


def _instance(instance: Path | None, out: Path | None, generate, usage: str, cls):
    """``--generate``: write the instance ``generate()`` returns (with a description) to
    ``--instance``, and stop there unless ``--out`` asks for a result too; without it, read
    ``--instance``. Returns the instance as read back from its file, or None when done."""
    if out is not None:
        check_out(out)
    if generate is not None:
        if instance is None:
            fail("--generate needs --instance FILE.json to write the instance to")
        made, described = generate()
        write_json(instance, made.to_dict())
        console.print(f"instance: {instance} ({described})", highlight=False)
        if out is None:
            return None
    elif instance is None:
        fail(f"give --instance FILE.json (or {usage} --instance FILE.json)")
    return cls.load(instance)


@market_app.command("lmaas")
def market_lmaas(
    instance: Path | None = typer.Option(
        None, "--instance", help="Instance JSON to solve (or to write with --generate)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Result JSON: prices, choices, durations, profits."),
    generate: str | None = typer.Option(None, "--generate", help="N_CUSTOMERS,N_MODELS: write a random instance."),
    seed: int = typer.Option(0, "--seed", callback=seed_option, help="Seed for --generate."),
    family: str = typer.Option(
        "default", "--family", help="Generator for --generate: default, spread or unrelated (docs/lmaas.md)."
    ),
) -> None:
    """Large-Model-as-a-Service pricing: IMP prices for the seller, RSR choices for customers."""
    import numpy as np

    from edgefm.market import lmaas

    makers = {"default": lmaas.generate, "spread": lmaas.generate_spread, "unrelated": lmaas.generate_unrelated}
    if family not in makers:
        fail(f"--family {family!r}: expected one of {', '.join(makers)}")
    if family != "default" and not generate:
        fail(f"--family {family}: only picks the generator of --generate N_CUSTOMERS,N_MODELS")

    def make():
        n, m = _parse_pair(generate, "--generate", "N_CUSTOMERS,N_MODELS")
        if m < 1:
            fail(f"--generate {generate!r}: expected at least one model")
        made = makers[family](n, m, np.random.default_rng(seed))
        return made, f"{n} customers, {m} models, {family} family, seed {seed}"

    try:
        inst = _instance(
            instance,
            out,
            make if generate else None,
            "--generate N_CUSTOMERS,N_MODELS",
            lmaas.Instance,
        )
        if inst is None:
            return
        result = lmaas.solve(inst)
    except EdgefmError as exc:
        fail(str(exc))
    renting = sum(c >= 0 for c in result["choices"])
    table = Table(title=f"LMaaS: {inst.n_customers} customers, {inst.n_models} models")
    for col in ("model", "accuracy", "cost/h", "price/h", "customers"):
        table.add_column(col, justify="right")
    for j in range(inst.n_models):
        table.add_row(
            str(j),
            f"{inst.accuracy[j]:.3f}",
            f"{inst.cost[j]:.3f}",
            f"{result['prices'][j]:.3f}",
            str(result["choices"].count(j)),
        )
    console.print(table)
    console.print(
        f"seller profit {result['seller_profit']:.4f}; {renting} of {inst.n_customers} customers rent; "
        f"{result['iterations']} price moves in {result['solve_seconds']:.3f} s",
        highlight=False,
    )
    if out is not None:
        write_json(out, result)
        from edgefm.report.market import lmaas_page

        console.print(f"result: {out}; page: {lmaas_page(inst, result, _page(out))}", highlight=False)


@market_app.command("aeria")
def market_aeria(
    instance: Path | None = typer.Option(
        None, "--instance", help="Instance JSON to run (or to write with --generate)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Outcome JSON: winners, payments, plans, revenue."),
    seed: int = typer.Option(
        0, "--seed", callback=seed_option, help="Seed of the auction's randomness (and of --generate)."
    ),
    variant: str = typer.Option("threshold", "--variant", help="threshold (universally truthful) or consensus."),
    pricing: str = typer.Option(
        "per-user", "--pricing", help="per-user (a price per inference) or resource (a price per GFLOP/s of edge)."
    ),
    generate: int | None = typer.Option(None, "--generate", help="N_USERS: write a random instance."),
    workload: str = typer.Option("resnet50", "--workload", help="Workload for --generate (see docs/aeria.md)."),
) -> None:
    """AERIA auction for edge inference: partitioning, consensus target, cost sharing."""
    import numpy as np

    from edgefm.market import aeria, aeria_resource

    auctions = {"per-user": aeria.run_auction, "resource": aeria_resource.run_resource_auction}
    if pricing not in auctions:
        fail(f"--pricing {pricing!r}: expected per-user or resource")

    def make():
        if generate < 0:
            fail(f"--generate {generate}: expected a non-negative number of users")
        return aeria.generate(
            generate, workload, np.random.default_rng(seed)
        ), f"{generate} users, {workload}, seed {seed}"

    try:
        inst = _instance(
            instance,
            out,
            make if generate is not None else None,
            "--generate N_USERS --workload NAME",
            aeria.Instance,
        )
        if inst is None:
            return
        outcome = auctions[pricing](inst, seed, variant)
    except EdgefmError as exc:
        fail(str(exc))
    console.print(
        f"{len(outcome.winners)} of {inst.n_users} users win ({outcome.admitted} admitted, {pricing} pricing); revenue "
        f"{outcome.revenue:.4f} (F2 {outcome.f2:.4f}, target {outcome.target:.4f}); EIP paid "
        f"{outcome.eip_payment:.4f}; {outcome.seconds * 1e3:.1f} ms",
        highlight=False,
    )
    if out is not None:
        write_json(out, outcome.to_dict())
        from edgefm.report.market import aeria_page

        console.print(f"outcome: {out}; page: {aeria_page(inst, outcome, _page(out))}", highlight=False)


@market_app.command("prince")
def market_prince(
    instance: Path | None = typer.Option(
        None, "--instance", help="Instance JSON to solve (or to write with --generate)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Outcome JSON: prices, tenants, q, times, payments."),
    generate: str | None = typer.Option(None, "--generate", help="N_DEVICES,N_TENANTS: write a random instance."),
    seed: int = typer.Option(0, "--seed", callback=seed_option, help="Seed for --generate."),
) -> None:
    """PRINCE: a congestion game among devices under tenants' Stackelberg prices (split fine-tuning)."""
    import numpy as np

    from edgefm.market import prince, prince_instance

    def make():
        n, m = _parse_pair(generate, "--generate", "N_DEVICES,N_TENANTS")
        if n < 1 or m < 1:
            fail(f"--generate {generate!r}: expected at least one device and one tenant")
        return prince_instance.generate(n, m, np.random.default_rng(seed)), f"{n} devices, {m} tenants, seed {seed}"

    try:
        inst = _instance(instance, out, make if generate else None, "--generate N_DEVICES,N_TENANTS", prince.Instance)
        if inst is None:
            return
        result = prince.equilibrium(inst)
    except EdgefmError as exc:
        fail(str(exc))
    table = Table(title=f"PRINCE: {inst.n_devices} devices, {inst.n_tenants} tenants")
    for col in ("tenant", "devices", "load", "rounds", "round s", "J s", "deadline", "paid", "budget"):
        table.add_column(col, justify="right")
    for t in result["tenants"]:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        table.add_row(
            t["name"],
            str(t["members"]),
            f"{t['load']:.2f}",
            fmt(t["rounds"], ".1f"),
            f"{t['round_seconds']:.2f}",
            fmt(t["time"], ".1f") + ("" if t["deadline_met"] else " (late)"),
            f"{t['deadline']:.0f}",
            f"{t['payment']:.4f}",
            f"{t['budget']:.4f}" + ("" if t["budget_met"] else " (over)"),
        )
    console.print(table)
    console.print(
        f"{result['sweeps']} tenant sweeps ({'converged' if result['converged'] else 'not converged'}), "
        f"device regret {result['device_regret']:.2e}, {result['seconds']:.2f} s",
        highlight=False,
    )
    if out is not None:
        write_json(out, result)
        from edgefm.report.market import prince_page

        console.print(f"outcome: {out}; page: {prince_page(inst, result, _page(out))}", highlight=False)
