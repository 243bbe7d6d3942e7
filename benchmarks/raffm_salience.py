"""RaFFM with data-aware salience (issue 21, item 2): writes benchmarks/results/raffm_salience.{json,md}.

1. Pretrained MiniLM, no training: hidden-state cosine to the full model of the subnetwork cut at
   25/50/75% of the FFN and query/key width, per ordering (as is, the paper's weight-L1 SPP, and
   activation statistics of 512 training sentences; ``models/salience.py``).
2. A full-size model trained federatedly (RaFFM at full size on every device: FedAvg), cut
   without retraining at 25/50/75% width per ordering, its test accuracy: ``edgefm export RUN
   --budget 50% [--spp weight|activation]``, where the activation order comes from each
   client's statistics of its own data, combined sample-weighted as the server does.
3. With ``--raffm-seeds 0``: RaFFM trained with each ordering (``algorithm.salience``), the global
   model's accuracy and the cuts of the finished model.

MiniLM on SST-2 and AG News, seeds 0-2. Runs are reused when their folder holds a summary.

    python -m benchmarks.raffm_salience [--seeds 0,1,2] [--datasets sst2,agnews] [--raffm-seeds 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import RESULTS, ROOT, machine, table, train_run

WIDTHS = ["25%", "50%", "75%"]
ORDERS = {"as is": "", "weight (SPP)": "weight", "activation": "activation"}
TIERS = "{low_end_phone: 0.5, high_end_phone: 0.2, embedded_gpu: 0.1, laptop: 0.1, edge_server: 0.1}"


def pretrained_cosine(dataset: str) -> list[dict]:
    """Hidden-state cosine (mean over non-padding tokens of 300 test sentences) per cut."""
    from edgefm.config import DataConfig
    from edgefm.data.sources import load_data
    from edgefm.models import elastic as E
    from edgefm.models import salience as S
    from edgefm.models.backbones import minilm

    torch.manual_seed(0)
    bb = minilm()
    model, tok = bb.encoder.eval(), bb.tokenizer
    arch = E.Arch.of(model)
    bundle = load_data(DataConfig(name=dataset, max_train=512, max_test=300), 0)
    key = "text"

    def batches(texts):
        for i in range(0, len(texts), 64):
            yield tok(list(texts[i : i + 64]), padding=True, truncation=True, max_length=64, return_tensors="pt")

    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad(), S.ActivationStats(model) as st:
        for b in batches(bundle.train[key]):
            model(b["input_ids"], b["attention_mask"])
    stats = st.means()
    perms = S.activation_permutations(state, stats, arch, prefix="encoder")
    orders = {
        "as is": state,
        "weight (SPP)": E.reorder(state, arch, prefix="encoder"),
        "activation": E.apply_permutations(state, perms),
    }
    test = list(batches(bundle.test[key]))
    with torch.no_grad():
        ref = [model(b["input_ids"], b["attention_mask"]).last_hidden_state for b in test]
    rows = []
    for width in WIDTHS:
        r = float(width[:-1]) / 100
        row = {"dataset": dataset, "width": width}
        for name, ordered in orders.items():
            E.load_tensors(model, ordered)
            sub = E.extract(model, E.Spec.uniform(arch, r, r), arch).eval()
            cos, n = 0.0, 0.0
            with torch.no_grad():
                for b, h in zip(test, ref, strict=True):
                    c = torch.nn.functional.cosine_similarity(sub(**b).last_hidden_state, h, dim=-1)
                    cos += float((c * b["attention_mask"]).sum())
                    n += float(b["attention_mask"].sum())
            row[name] = cos / n
        E.load_tensors(model, state)
        rows.append(row)
    return rows


def overrides(dataset: str, seed: int, rounds: int, extra: list[str]) -> list[str]:
    return [
        f"seed={seed}",
        "model.name=minilm",
        "model.finetune=full",
        "train.lr=1e-4",
        "train.head_lr=1e-2",
        "clients=10",
        f"rounds={rounds}",
        f"data.name={dataset}",
        "data.max_train=1500",
        "data.max_test=872" if dataset == "sst2" else "data.max_test=1000",
        "data.max_length=64",
        "partition.alpha=0.5",
        f"edge.tiers={TIERS}",
        "algorithm.name=raffm",
        "algorithm.step_budget_s=3.0",
        *extra,
    ]


def cut_rows(run_dir: Path, dataset: str, seed: int, trained_as: str, orders: dict[str, str]) -> list[dict]:
    """The cuts of a finished run by each order (kept in the run folder, so reruns reuse them)."""
    from edgefm.fl import trained

    cache = run_dir / "salience_cuts.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    run = trained.open_run(run_dir)
    rows = []
    for name, order in orders.items():
        result = trained.export(run, [*WIDTHS, "full"], reorder=order)
        for m in result["models"]:
            rows.append({"dataset": dataset, "seed": seed, "trained": trained_as, "order": name,
                         "width": m["budget"], "accuracy": m["accuracy"]})  # fmt: skip
    cache.write_text(json.dumps(rows))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="sst2,agnews")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--raffm-seeds", default="", help="also train RaFFM with each ordering, these seeds")
    ap.add_argument("--raffm-datasets", default="sst2,agnews", help="...on these datasets")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-salience")
    ap.add_argument("--report-only", action="store_true", help="re-render the .md from the .json")
    args = ap.parse_args()
    if args.report_only:
        render(json.loads((RESULTS / "raffm_salience.json").read_text()))
        return
    datasets, seeds = args.datasets.split(","), [int(s) for s in args.seeds.split(",")]
    cosine = [row for ds in datasets for row in pretrained_cosine(ds)]
    cuts, trained_rows = [], []
    full_size = ["algorithm.space=full", "algorithm.salience=none", "algorithm.unfit=force"]
    for ds in datasets:
        for seed in seeds:
            out = args.runs_dir / f"{ds}-fullsize-s{seed}"
            s = train_run(overrides(ds, seed, args.rounds, full_size), out)
            trained_rows.append({"dataset": ds, "seed": seed, "trained": "full size", "accuracy": s["final_accuracy"]})
            cuts += cut_rows(out, ds, seed, "full size", ORDERS)
            if str(seed) not in args.raffm_seeds.split(",") or ds not in args.raffm_datasets.split(","):
                continue
            for salience in ("none", "spp", "activation"):
                out = args.runs_dir / f"{ds}-raffm-{salience}-s{seed}"
                s = train_run(overrides(ds, seed, args.rounds, [f"algorithm.salience={salience}"]), out)
                name = f"RaFFM salience={salience}"
                trained_rows.append({"dataset": ds, "seed": seed, "trained": name, "accuracy": s["final_accuracy"],
                                     "upload_MB/client/round": s["upload_mb_per_client_round"]})  # fmt: skip
                cuts += cut_rows(out, ds, seed, name, {"as trained": ""})
    payload = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "cosine": cosine,
               "cuts": cuts, "trained": trained_rows}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "raffm_salience.json").write_text(json.dumps(payload, indent=1))
    render(payload)


def _summary(cuts: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (dataset, trained, width), one column per order."""
    keys = sorted({(c["dataset"], c["trained"], c["width"]) for c in cuts}, key=lambda k: (k[0], k[1], _w(k[2])))
    rows = []
    for ds, trained_as, width in keys:
        row = {"dataset": ds, "trained": trained_as, "width": width}
        for order in dict.fromkeys(c["order"] for c in cuts if c["trained"] == trained_as):
            acc = [c["accuracy"] for c in cuts if (c["dataset"], c["trained"], c["width"], c["order"]) ==
                   (ds, trained_as, width, order)]  # fmt: skip
            row[order] = f"{np.mean(acc):.3f} ± {np.std(acc):.3f}" if acc else ""
        row["seeds"] = len(acc)
        rows.append(row)
    return rows


def _w(width: str) -> float:
    return 1.0 if width == "full" else float(width[:-1]) / 100


def render(p: dict) -> None:
    m = p["machine"]
    lines = [
        "# RaFFM: which order to cut by (weight-L1 SPP vs activation statistics vs as is)",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, {m['date']}. Regenerate: "
        f"`python -m benchmarks.raffm_salience --datasets {p['args']['datasets']} --seeds {p['args']['seeds']}"
        + (
            f" --raffm-seeds {p['args']['raffm_seeds']} --raffm-datasets {p['args']['raffm_datasets']}"
            if p["args"]["raffm_seeds"]
            else ""
        )
        + "`. Widths are uniform cuts of every layer's FFN and "
        "query/key width (`edgefm export RUN --budget 50%`); value/output widths and the head count stay.",
        "",
        "## 1. Pretrained MiniLM, no training: hidden-state cosine to the full model",
        "",
        "Mean per-token cosine over 300 test sentences; the activation order from 512 training sentences.",
        "",
        *table(p["cosine"]),
        "",
        "## 2. Trained models cut without retraining: test accuracy (mean ± std over seeds)",
        "",
        "*full size*: MiniLM fine-tuned in full on all 10 devices (RaFFM at full size, `space=full`, "
        "`salience=none`: FedAvg), 5 rounds, 1,500 examples, Dirichlet 0.5; then cut by each order. The "
        "activation order comes from each client's statistics of its own training data (256 examples each, "
        "measured at full width), combined sample-weighted, as the server combines what clients send with "
        "`salience=activation`. *RaFFM salience=X* (where run): RaFFM trained with that order (each device "
        "the widest subnetwork it can train, the server reordering after every round), its global model cut "
        "as trained.",
        "",
        *table(_summary([c for c in p["cuts"] if c["trained"] == "full size"])),
        "",
        *table(_summary([c for c in p["cuts"] if c["trained"] != "full size"])),
        "",
        "Final accuracy of the trained models:",
        "",
        *table(p["trained"]),
        "",
    ]
    (RESULTS / "raffm_salience.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
