"""DeepFusion against its baselines: writes benchmarks/results/deepfusion.{json,md}.

BBC News (5 topics) plus PubMedQA (medicine) as six knowledge domains, 600 documents, a fifth of
them public on the server; devices skewed by domain and uneven in size (Dirichlet alpha 0.3);
BPE 1,000, 64-token blocks, learning rate 0.005. Devices run three families (gpt2, llama, qwen3), each the largest
size (s or m) that fits its memory (scaled by 0.2). Every method through the same runtime and
ledger, scored on the same pooled test documents:

- DeepFusion (VAA), one upload per device; its ablations: linear feature matching, devices of
  one family (llama), one proxy per architecture (no clustering), no teacher at all (the
  students trained on the public text alone: the control); its KD baselines on the same
  Phase I and III: FedMKT-style logit KD, OFA-KD-style;
- FedJETS-style federated MoE, ``--jets-rounds`` rounds of a 2-expert slice per device;
- centralized training of the same MoE on the pooled device text (the upper bound).

DeepFusion, FedJETS and centralized run at every ``--devices``; the ablations and KD baselines at
``--ablate-at`` devices.

    python -m benchmarks.deepfusion --devices 8,16 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks._common import RESULTS, ROOT, machine, table, train_run

EXPERTS = 4
COMMON = [
    "task=lm",
    "data.name=bbcnews+pubmedqa",
    "data.max_train=600",
    "data.max_test=100",
    "data.tokenizer=bpe:1000",
    "data.block_length=64",
    "data.public_fraction=0.2",
    "partition.alpha=0.3",
    "train.batch_size=16",
    "model.finetune=full",
    "edge.memory_scale=0.2",
]
HETERO = ["model.name=llama", "model.families=[gpt2, llama, qwen3]", "model.sizes=[s, m]"]
DF = [
    "rounds=1",
    "algorithm.name=deepfusion",
    f"algorithm.experts={EXPERTS}",
    "algorithm.merge_steps=20",
]
LR = 0.005  # the devices' (and the centralized MoE's, FedJETS') learning rate, unless --lr says otherwise
STEPS = 40  # a device's training steps (FedJETS: per round), unless --steps says otherwise
DISTILL = 40  # Phase II steps per student, unless --distill-steps says otherwise
CENTRAL_EVERY, CENTRAL_ROUNDS = 40, 24  # the centralized bound: 960 steps (about 3 passes), evaluated every 40
MOE = ["model.name=qwen3_moe", "model.sizes=[s]", f"model.experts={EXPERTS}"]
MAIN = {
    "DeepFusion (VAA)": [*HETERO, *DF],
    "FedJETS-style fed. MoE": [*MOE, "algorithm.name=fedjets"],
    "centralized MoE (upper bound)": [*MOE, "algorithm.name=centralized"],
}
ABLATIONS = {
    "KD baseline: FedMKT-style": [*HETERO, *DF, "algorithm.distill=fedmkt"],
    "KD baseline: OFA-KD-style": [*HETERO, *DF, "algorithm.distill=ofa"],
    "ablation: linear FM (no VAA)": [*HETERO, *DF, "algorithm.distill=linear"],
    "ablation: llama devices only": ["model.name=llama", "model.sizes=[s, m]", *DF],
    "ablation: no clustering": [*HETERO, *DF, "algorithm.clustering=none"],
    # the control for Phase II: the students learn from the public text alone (alpha = beta = 0),
    # so what the teachers add is the gap to this row
    "ablation: no teacher (public CE only)": [*HETERO, *DF, "algorithm.alpha=0", "algorithm.beta=0"],
}


def overrides(method: str, extra: list[str], n: int, seed: str, args) -> list[str]:
    out = [
        *COMMON,
        f"train.lr={args.lr}",
        f"seed={seed}",
        f"clients={n}",
        *extra,
        f"algorithm.local_steps={args.steps}",
    ]
    if "algorithm.name=deepfusion" in extra:
        out.append(f"algorithm.distill_steps={args.distill_steps}")
    if "fedjets" in " ".join(extra):
        out = [o for o in out if not o.startswith("algorithm.local_steps")]
        out += [f"rounds={args.jets_rounds}", f"eval_every={args.jets_rounds}", f"train.max_steps={args.steps}"]
    if "centralized" in " ".join(extra):
        # The same MoE on the pooled text, evaluated every CENTRAL_EVERY steps for CENTRAL_ROUNDS
        # rounds; its best evaluation is the bound (optimistic: chosen on the test text). The
        # pooled text is the same documents at every device count (the devices only split them),
        # so is the schedule. Until 2026-12-05 the pooling kept as many blocks as documents (about
        # 390 of 4,770 blocks at 8 devices), so it overfitted within ~150 steps of 320; on all
        # of the text it still improves at 320 steps, hence 960.
        out = [o for o in out if not o.startswith("algorithm.local_steps")]
        out += [f"train.max_steps={CENTRAL_EVERY}", "train.epochs=1000", f"rounds={CENTRAL_ROUNDS}"]
    return out


def row_of(method: str, n: int, done: list[dict]) -> dict:
    def mean(key: str) -> float | None:
        vals = [d[key] for d in done if d.get(key) is not None]
        return float(np.mean(vals)) if vals else None  # JSON has no NaN

    log_ppl = [d["log_ppl"] for d in done]
    return {
        "devices": n,
        "method": method,
        "seeds": len(done),
        "test log-ppl": float(np.mean(log_ppl)),
        "±std": float(np.std(log_ppl)),
        "token acc": mean("token_acc"),
        "medicine log-ppl": mean("log_ppl/medicine"),
        "news log-ppl": mean("news_log_ppl"),
        "MB up": mean("mb_up"),
        "MB down": mean("mb_down"),
        "device peak MiB": mean("peak_mib"),
        "server s I/II/III": "/".join(f"{mean(f'server_s_phase{k}'):.1f}" for k in (1, 2, 3))
        if done[0].get("server_s_phase1") is not None
        else "",
        "Phase II KL": mean("phase2_kl"),
    }


def measure(out: Path) -> dict:
    rounds = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    clients = [json.loads(x) for x in (out / "clients.jsonl").read_text().splitlines()]
    last = rounds[-1]
    if json.loads((out / "summary.json").read_text())["algorithm"] == "centralized":
        last = min(rounds, key=lambda r: r["log_ppl"])  # the upper bound: its best evaluation
    news = [v for k, v in last.items() if k.startswith("log_ppl/") and k != "log_ppl/medicine"]
    return {
        **{k: v for k, v in last.items() if not k.startswith(("ppl/", "token_acc/"))},
        "news_log_ppl": float(np.mean(news)) if news else None,
        "mb_up": sum(r["bytes_up"] for r in rounds) / 1e6,
        "mb_down": sum(r["bytes_down"] for r in rounds) / 1e6,
        "peak_mib": max((c.get("memory_mb", 0.0) for c in clients if c["status"] == "ok"), default=0.0),
        "architectures": json.loads((out / "summary.json").read_text()).get("architectures", {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="8,16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ablate-at", type=int, default=8)
    ap.add_argument("--ablation-seeds", default=None, help="seeds of the KD baselines and ablations (default: --seeds)")
    ap.add_argument(
        "--steps",
        type=int,
        default=STEPS,
        help=f"a device's training steps (FedJETS: per round); other than {STEPS}, rows are labelled with it",
    )
    ap.add_argument(
        "--distill-steps",
        type=int,
        default=DISTILL,
        help=f"Phase II steps per student (DeepFusion and its variants); other than {DISTILL}, rows are labelled with it",
    )
    ap.add_argument(
        "--lr",
        type=float,
        default=LR,
        help=f"train.lr (devices, FedJETS, centralized); other than {LR}, rows are labelled with it",
    )
    ap.add_argument("--jets-rounds", type=int, default=3)
    ap.add_argument(
        "--methods", default=None, help="run only methods whose name contains one of these (comma-separated)"
    )
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-deepfusion")
    ap.add_argument(
        "--add-to-saved",
        action="store_true",
        help="keep the runs deepfusion.json already holds (other device counts, methods or seeds: the run folders "
        "are not in git) and add these to them; every row is then recomputed from its runs",
    )
    args = ap.parse_args()
    raw = []
    for n in [int(x) for x in args.devices.split(",")]:
        methods = {**MAIN, **(ABLATIONS if n == args.ablate_at else {})}
        for method, extra in methods.items():
            if args.methods and not any(w.lower() in method.lower() for w in args.methods.split(",")):
                continue
            # only DeepFusion and its variants have a Phase II; the others' rows keep their label
            distill = args.distill_steps if "algorithm.name=deepfusion" in extra else DISTILL
            seeds = args.seeds if method in MAIN or not args.ablation_seeds else args.ablation_seeds
            label = method + "".join(
                text
                for v, default, text in [
                    (args.steps, STEPS, f", {args.steps} device steps"),
                    (distill, DISTILL, f", {distill} Phase II steps"),
                    (args.lr, LR, f", lr {args.lr:g}"),
                ]
                if v != default
            )
            for seed in seeds.split(","):
                slug = "".join(c if c.isalnum() else "_" for c in label)
                out = args.runs_dir / f"n{n}-{slug}-s{seed}"
                train_run(overrides(method, extra, n, seed, args), out)
                m = measure(out)
                row = {"devices": n, "method": label, "base": method, "steps": args.steps, "seed": seed}
                row["distill_steps"] = distill
                row["lr"] = args.lr
                raw.append({**row, "date": machine()["date"], **m})
                print(n, label, seed, round(m["log_ppl"], 4), flush=True)
    if args.add_to_saved:
        saved = json.loads((RESULTS / "deepfusion.json").read_text())
        new = {(r["devices"], r["method"], r["seed"]) for r in raw}
        date = saved["machine"]["date"]
        old = [{"date": date, **r} for r in saved["runs"] if (r["devices"], r["method"], r["seed"]) not in new]
        raw = old + raw
    order = list(MAIN) + list(ABLATIONS)
    raw.sort(
        key=lambda r: (
            r["devices"],
            r.get("steps", STEPS),
            order.index(r.get("base", r["method"])),
            r.get("distill_steps", DISTILL),
            -r.get("lr", LR),
            str(r["seed"]),
        )
    )
    rows = []
    for n, method in dict.fromkeys((r["devices"], r["method"]) for r in raw):
        rows.append(row_of(method, n, [r for r in raw if (r["devices"], r["method"]) == (n, method)]))
    write(args, rows, raw)


def write(args, rows: list[dict], raw: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    m = machine()
    (RESULTS / "deepfusion.json").write_text(
        json.dumps(
            {"machine": m, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "runs": raw}, indent=1
        )
    )
    lines = [
        "# DeepFusion: heterogeneous device LMs fused into one MoE, against its baselines",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, {m['date']}. Runs measured on "
        f"{', '.join(sorted({r.get('date', m['date']) for r in raw}))} (each run's date in deepfusion.json). BBC News + PubMedQA "
        f"(6 domains), 600 documents (a fifth public), BPE 1,000, 64-token blocks, lr {LR} unless the row says otherwise, Dirichlet 0.3 over domains; a "
        f"MoE of {EXPERTS} qwen3-s experts (top-2), Phase II {DISTILL} steps per student unless the row says otherwise, Phase III 20; devices train {STEPS} steps of 16 blocks unless the row says otherwise (FedJETS: per round, "
        f"{args.jets_rounds} rounds; centralized: {CENTRAL_EVERY * CENTRAL_ROUNDS} steps on the pooled text (all of it since 2026-12-05), the same documents at every device count, evaluated every {CENTRAL_EVERY}, its best evaluation reported). Regenerate: "
        "`python -m benchmarks.deepfusion --devices 8 --seeds 0,1,2`, then `--devices 16 --seeds 0,1,2 --add-to-saved` "
        "and `--devices 32 --seeds 0,1,2 --add-to-saved` (the seeds column gives each row's runs; `--methods` reruns only "
        "the named methods; rows marked 160 device steps: `--devices 8 --seeds 0,1,2 --ablation-seeds 0,1,2 --steps 160 --methods "
        '"DeepFusion (VAA),FedMKT,linear FM,FedJETS" --add-to-saved`, and with 320 Phase II steps the same with '
        '`--distill-steps 320 --methods "DeepFusion (VAA),FedMKT,linear FM,no teacher"`; the no-teacher control at 40 steps: '
        '`--devices 8 --seeds 0,1,2 --methods "no teacher" --add-to-saved`).',
        "",
        *table(rows),
        "",
        "test log-ppl: mean token negative log-likelihood of the final MoE on the pooled test documents (lower is "
        "better; ±std over seeds); medicine / news: on the PubMedQA and the BBC News test text. MB up/down: totals "
        "over the run, all devices. device peak MiB: the largest training-memory estimate of any device. server s: "
        "the server's seconds in Phase I/II/III (this machine). Phase II KL: mean per-token KL(teacher || student) "
        "after distillation, on public blocks.",
        "",
    ]
    (RESULTS / "deepfusion.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
