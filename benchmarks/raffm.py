"""RaFFM evidence (issue 6): writes benchmarks/results/raffm.{json,md}.

Every method is the ``raffm`` strategy with one knob changed, so all share the runtime, the
ledger, the frozen embeddings and the learning rates: full-size FedAvg (devices that cannot
train the whole model within the step budget drop out, or are forced in), HeteroFL-style static
widths 1, 1/2, 1/4 without SPP, RaFFM without SPP, RaFFM, and RaFFM with Q and K ranked
independently. After training, the RaFFM run of the first seed is cut for several device budgets
with ``edgefm export`` (no retraining). Runs are reused when their folder holds a summary.

    python -m benchmarks.raffm --datasets sst2,agnews --seeds 0,1,2
    python -m benchmarks.raffm --model tiny_bert --datasets sst2 --seeds 0,1,2 --rounds 15
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks._common import RESULTS, ROOT, machine, table, train_run

METHODS = {
    "full-size FedAvg (drop)": ["algorithm.space=full", "algorithm.salience=none", "algorithm.unfit=drop"],
    "full-size FedAvg (force)": ["algorithm.space=full", "algorithm.salience=none", "algorithm.unfit=force"],
    "HeteroFL (static widths)": ["algorithm.space=heterofl", "algorithm.salience=none"],
    "RaFFM w/o SPP": ["algorithm.salience=none"],
    "RaFFM": ["algorithm.salience=spp"],
    "RaFFM independent Q/K": ["algorithm.salience=independent_qk"],
    "RaFFM (official aggregation)": ["algorithm.salience=spp", "algorithm.aggregation=official"],
}
DEFAULT_METHODS = [m for m in METHODS if m != "RaFFM (official aggregation)"]
TARGET = {"sst2": 0.75, "agnews": 0.80}
TIERS = "{low_end_phone: 0.5, high_end_phone: 0.2, embedded_gpu: 0.1, laptop: 0.1, edge_server: 0.1}"
EXPORT_BUDGETS = ["iot_camera", "low_end_phone", "high_end_phone", "full"]
# cut after training (method -> apply SPP at export?): the two RaFFM runs as trained, and the
# full-size model cut as trained and after a post-hoc SPP reordering
EXPORTED = {"RaFFM": [False], "RaFFM w/o SPP": [False], "full-size FedAvg (force)": [False, True]}


def time_to_target(run_dir: Path, target: float) -> float | None:
    """Simulated seconds until the global accuracy first reaches ``target`` (None: never)."""
    total = 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        total += r["sim_round_s"]
        if r.get("accuracy", 0.0) >= target:
            return total
    return None


def aggregation(overrides: list[str]) -> str:
    """The aggregation rule a method's runs use (the config default unless overridden)."""
    from edgefm.algorithms.configs import RaFFMConfig

    given = [o.split("=", 1)[1] for o in overrides if o.startswith("algorithm.aggregation=")]
    return given[-1] if given else RaFFMConfig.aggregation


def device_figures(run_dir: Path) -> dict[str, float]:
    rounds_ = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (run_dir / "clients.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    rounds = max(r["round"] for r in rows)
    return {
        "params_mean_M": float(np.mean([r["client_subnet_params"] for r in ok])) / 1e6,
        "params_min_M": float(np.min([r["client_subnet_params"] for r in ok])) / 1e6,
        "GFLOPs/device/round": float(np.mean([r["flops"] for r in ok])) / 1e9,
        "dropped/round": sum(r["status"] == "dropped" for r in rows) / rounds,
        "last2_acc": float(np.mean([r["accuracy"] for r in rounds_[-2:]])),  # less noisy than the last round
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--datasets", default="sst2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-train", type=int, default=1500)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--step-budget", type=float, default=None, help="seconds per step (default 3; tiny_bert 0.012)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--cached-only", action="store_true", help="tabulate only finished runs; start none")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-raffm")
    args = ap.parse_args()
    tiny = args.model == "tiny_bert"
    budget = args.step_budget or (0.012 if tiny else 3.0)  # the same tiers end up cut in both
    # a random tiny BERT learns nothing through frozen random embeddings: it trains them too
    lr = (
        ["train.lr=0.003", "train.head_lr=0.01", "algorithm.train_embeddings=true"]
        if tiny
        else ["train.lr=1e-4", "train.head_lr=1e-2"]
    )
    rows, raw, exports = [], [], {}
    for ds in args.datasets.split(","):
        for method in args.methods.split(","):
            done = []
            for seed in args.seeds.split(","):
                overrides = [
                    f"seed={seed}",
                    f"model.name={args.model}",
                    "model.finetune=full",
                    *lr,
                    f"clients={args.clients}",
                    f"rounds={args.rounds}",
                    f"data.name={ds}",
                    f"data.max_train={args.max_train}",
                    "data.max_test=872" if ds == "sst2" else "data.max_test=1000",
                    "data.max_length=64",
                    f"partition.alpha={args.alpha}",
                    f"edge.tiers={TIERS}",
                    "algorithm.name=raffm",
                    f"algorithm.step_budget_s={budget}",
                    *METHODS[method],
                ]
                slug = (
                    method.lower().replace(" ", "_").replace("/", "").replace(",", "").replace("(", "").replace(")", "")
                )
                out = args.runs_dir / f"{args.model}-{ds}-{slug}-s{seed}"
                if args.cached_only and not (out / "summary.json").is_file():
                    continue
                s = train_run(overrides, out)
                figures = device_figures(out)
                tt = time_to_target(out, TARGET[ds])
                raw.append({"dataset": ds, "method": method, "seed": seed, "time_to_target_s": tt, **figures, **s})
                done.append((s, figures, tt))
                for spp in EXPORTED.get(method, []):
                    key = (ds, method + (" + SPP at export" if spp else ""))
                    if key not in exports:
                        from edgefm.fl import trained

                        exports[key] = trained.export(
                            trained.open_run(out), EXPORT_BUDGETS, reorder="weight" if spp else ""
                        )
            if not done:
                continue
            reached = [tt for _, _, tt in done if tt is not None]
            rows.append(
                {
                    "dataset": ds,
                    "method": method,
                    "aggregation": aggregation(METHODS[method]),
                    "seeds": len(done),
                    "global_acc": float(np.mean([s["final_accuracy"] for s, _, _ in done])),
                    "acc_std": float(np.std([s["final_accuracy"] for s, _, _ in done])),
                    "last2_acc": float(np.mean([f["last2_acc"] for _, f, _ in done])),
                    "params/device_M (mean, min)": f"{np.mean([f['params_mean_M'] for _, f, _ in done]):.2f}, "
                    f"{np.mean([f['params_min_M'] for _, f, _ in done]):.2f}",
                    "GFLOPs/device/round": float(np.mean([f["GFLOPs/device/round"] for _, f, _ in done])),
                    "upload_MB/client/round": float(np.mean([s["upload_mb_per_client_round"] for s, _, _ in done])),
                    "sim_s/round": float(np.mean([s["sim_seconds_per_round"] for s, _, _ in done])),
                    f"sim_s_to_target ({'/'.join(f'{k} {v}' for k, v in TARGET.items())})": (
                        f"{np.mean(reached):.0f} ({len(reached)}/{len(done)} reached)" if reached else "never"
                    ),
                    "energy_kJ/round": float(np.mean([s["joules"] / s["rounds"] for s, _, _ in done])) / 1e3,
                    "dropped/round": float(np.mean([f["dropped/round"] for _, f, _ in done])),
                }
            )
    write(args, rows, raw, exports, budget)


def write(args, rows, raw, exports, budget) -> None:
    tiny = args.model == "tiny_bert"
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "raffm" if args.model == "minilm" else f"raffm_{args.model}"
    payload = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    cuts = {f"{ds}/{method}": e for (ds, method), e in exports.items()}
    (RESULTS / f"{name}.json").write_text(json.dumps({**payload, "runs": raw, "exports": cuts}, indent=1))
    m = machine()
    export_rows = [
        {
            "dataset": ds,
            "trained with": method,
            "budget": r["budget"],
            "fits": r["fits"],
            "params_M": r["params"] / 1e6,
            "size_MB": r["size_mb"],
            "GFLOPs/example (inference)": r["flops_per_example"] / 1e9,
            "accuracy": r["accuracy"],
        }
        for (ds, method), e in exports.items()
        for r in e["models"]
    ]
    lines = [
        f"# RaFFM vs full-size FedAvg and HeteroFL ({args.model})",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, {m['date']}. Scale: {args.model}, full-weight "
        f"fine-tuning (embeddings {'trained' if tiny else 'frozen'}), datasets {args.datasets}, {args.clients} devices "
        f"({TIERS}, 20% jitter), Dirichlet alpha {args.alpha}, seeds {args.seeds}, {args.rounds} rounds, "
        f"{args.max_train} training examples, step budget {budget:g} s per batch of 32 x 64 tokens. Regenerate: "
        f"`python -m benchmarks.raffm --model {args.model} --datasets {args.datasets} --seeds {args.seeds} "
        f"--rounds {args.rounds}`.",
        "",
        *table(rows),
        "",
        "aggregation: how the server merges the devices' slices (`coverage`: each coordinate averaged over the "
        "devices that trained it, the default; `official`: the official code's rule, zero then add every slice "
        "over the number of participants). "
        "global_acc: the global model on the test set after the last round (mean over seeds; acc_std their standard "
        "deviation); last2_acc: the mean of the last two rounds' accuracy, less sensitive to one round's swing. params/device: parameters of the network each training device held (embeddings included). "
        "GFLOPs/device/round: measured training FLOPs per participating device. sim_s: simulated seconds (a round "
        "lasts as long as its slowest device). dropped: devices per round left out because no allowed network fit.",
        "",
        "## Subnetworks cut after training (`edgefm export`, the first seed's run, no retraining)",
        "",
        "The same budgets cut from the model trained with SPP (kept in salience order), from the one trained "
        "without it (leading slices of the unordered weights), and from the full-size model as trained and after "
        "a post-hoc SPP reordering. iot_camera fits no subnetwork at this budget; its row is the smallest one.",
        "",
        *table(export_rows),
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
