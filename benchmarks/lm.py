"""Language models at the edge: writes benchmarks/results/lm.{json,md}.

BBC News (5 topics, Dirichlet topic skew alpha 0.3 over devices), a BPE tokenizer of 4,000
tokens trained on the run's text, blocks of 64 tokens; 8 and 16 devices; every device takes
``--steps`` optimizer steps of 16 blocks per round. Methods, all through the same runtime:
centralized (the pooled text on one datacenter device), FedAvg of one architecture (Llama m,
full fine-tuning and LoRA r=8), local-only (Llama m), and heterogeneous-architecture FedAvg within
one family (gpt2, llama, qwen3: each device trains the largest size that fits its memory, scaled
by 0.2; one global model per size) and across the three families. Then, per architecture, the
estimated training memory against the peak measured for one device (RSS of a fresh process)
and the training throughput on this machine.

    python -m benchmarks.lm --devices 8,16 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks._common import RESULTS, ROOT, machine, table, train_run

COMMON = [
    "task=lm",
    "data.name=bbcnews",
    "data.max_train=600",
    "data.max_test=100",
    "data.tokenizer=bpe:4000",
    "data.block_length=64",
    "partition.alpha=0.3",
    "train.batch_size=16",
    "train.lr=0.002",
    "edge.memory_scale=0.2",
]
ONE = ["model.name=llama", "model.sizes=[m]"]
METHODS = {
    "centralized (llama-m)": [*ONE, "model.finetune=full", "algorithm.name=centralized"],
    "FedAvg full (llama-m)": [*ONE, "model.finetune=full", "algorithm.name=fedavg"],
    "FedAvg LoRA r=8 (llama-m)": [*ONE, "model.finetune=lora", "train.lr=0.01", "algorithm.name=fedavg"],
    "local-only (llama-m)": [*ONE, "model.finetune=full", "algorithm.name=local"],
    "hetero FedAvg: gpt2 sizes": ["model.name=gpt2", "model.finetune=full", "algorithm.name=fedavg"],
    "hetero FedAvg: llama sizes": ["model.name=llama", "model.finetune=full", "algorithm.name=fedavg"],
    "hetero FedAvg: qwen3 sizes": ["model.name=qwen3", "model.finetune=full", "algorithm.name=fedavg"],
    "hetero FedAvg: 3 families": [
        "model.name=llama",
        "model.families=[gpt2, llama, qwen3]",
        "model.finetune=full",
        "algorithm.name=fedavg",
    ],
}

PROBE = """
import json, resource, sys, time, torch
torch.set_num_threads(2)
from edgefm.models import causal, families as F
arch, vocab, batch, length, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
a = F.parse(arch, vocab, 512)
model = causal.build(a, 0, 1, seed=0).train()
weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(2, vocab, (batch, length))
mask = torch.ones_like(ids)
times, kept = [], {}
def pack(t):
    ptr = t.untyped_storage().data_ptr()
    if ptr not in weights:
        kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
    return t
for step in range(steps):
    t = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        logits = model(ids, mask)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t)
    if step == 0:
        saved = sum(kept.values())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
est = F.training_memory(a, batch, length)
print(json.dumps({"arch": arch, "estimated_mib": est.total / 2**20,
                  "estimated_activations_mib": est.activations / 2**20,
                  "saved_activations_mib (measured)": saved / 2**20,
                  "rss_peak_growth_mib (measured)": (peak - base) / 2**20,
                  "tokens_per_s": batch * length / sorted(times[1:])[len(times[1:]) // 2]}))
"""


def probe(arch: str, vocab: int, batch: int, length: int, steps: int = 6) -> dict:
    """Peak training memory (RSS growth of a fresh process) and throughput of one device's step."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, arch, str(vocab), str(batch), str(length), str(steps)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def archs_of(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "summary.json").read_text()).get("architectures", {})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", default="8,16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per device per round")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-lm")
    ap.add_argument("--cached-only", action="store_true")
    ap.add_argument(
        "--add-to-saved",
        action="store_true",
        help="keep lm.json's rows of the (devices, method) pairs this run does not measure (the run folders are "
        "not in git) and replace the rest; each run keeps its date",
    )
    args = ap.parse_args()
    rows, raw, seen = [], [], set()
    for n in [int(x) for x in args.devices.split(",")]:
        for method in args.methods.split(","):
            done = []
            for seed in args.seeds.split(","):
                overrides = [
                    *COMMON,
                    f"seed={seed}",
                    f"clients={n}",
                    f"rounds={args.rounds}",
                    f"eval_every={args.rounds}",
                    f"train.max_steps={args.steps * (n if 'centralized' in method else 1)}",
                    *METHODS[method],
                ]
                slug = "".join(c if c.isalnum() else "_" for c in method)
                out = args.runs_dir / f"n{n}-{slug}-s{seed}"
                if args.cached_only and not (out / "summary.json").is_file():
                    continue
                s = train_run(overrides, out)
                clients = [json.loads(x) for x in (out / "clients.jsonl").read_text().splitlines()]
                ok = [c for c in clients if c["status"] == "ok"]
                up = float(np.mean([c["bytes_up"] for c in ok])) / 1e6
                mem = float(np.mean([c.get("memory_mb", 0.0) for c in ok]))
                raw.append(
                    {"devices": n, "method": method, "seed": seed, "date": machine()["date"],
                     "upload_mb_per_device_round": up, **s}
                )  # fmt: skip
                done.append((s, up, mem))
                seen.update(archs_of(out))
            if not done:
                continue
            log_ppl = [s["final_log_ppl"] for s, _, _ in done]
            rows.append(
                {
                    "devices": n,
                    "method": method,
                    "seeds": len(done),
                    "test log-ppl": float(np.mean(log_ppl)),
                    "±std": float(np.std(log_ppl)),
                    "ppl": float(np.exp(np.mean(log_ppl))),
                    "token acc": float(np.mean([s["final_token_acc"] for s, _, _ in done])),
                    "worst client log-ppl": float(np.mean([s["client_log_ppl_max"] or np.nan for s, _, _ in done])),
                    "architectures (clients)": ", ".join(f"{a} {k}" for a, k in done[0][0]["architectures"].items()),
                    "MB up/device/round": float(np.mean([u for _, u, _ in done])),
                    "est. train MiB/device": float(np.mean([m for _, _, m in done])),
                    "sim s/round": float(np.mean([s["sim_seconds_per_round"] for s, _, _ in done])),
                }
            )
    saved = json.loads((RESULTS / "lm.json").read_text()) if args.add_to_saved else {"probes": []}
    probed = {p["arch"] for p in saved["probes"]}  # kept: a probe is per architecture, not per run
    probes = [probe(a, 4000, 16, 64) for a in sorted(seen) if a != "path" and a not in probed]
    if args.add_to_saved:
        new = {(r["devices"], r["method"]) for r in rows}
        date = saved["machine"]["date"]
        order = [(r["devices"], r["method"]) for r in saved["rows"]]
        rows = [r for r in saved["rows"] if (r["devices"], r["method"]) not in new] + rows
        rows.sort(key=lambda r: order.index((r["devices"], r["method"])) if (r["devices"], r["method"]) in order else 0)
        # a run's "devices" is its summary's (the device list); "clients" is the count
        raw = [{"date": date, **r} for r in saved["runs"] if (r["clients"], r["method"]) not in new] + raw
        probes = sorted(saved["probes"] + probes, key=lambda p: p["arch"])
    write(args, rows, raw, probes)


def write(args, rows, raw, probes) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    m = machine()
    (RESULTS / "lm.json").write_text(
        json.dumps(
            {
                "machine": m,
                "args": {k: str(v) for k, v in vars(args).items()},
                "rows": rows,
                "probes": probes,
                "runs": raw,
            },
            indent=1,
        )
    )
    lines = [
        "# Language models at the edge: BBC News, topic-skewed devices",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, {m['date']}. Runs measured on "
        f"{', '.join(sorted({r.get('date', m['date']) for r in raw}))} (each run's date in lm.json). "
        f"Seeds {args.seeds}; {args.rounds} rounds; every "
        f"device takes {args.steps} steps of 16 x 64-token blocks per round (centralized: {args.steps} x devices "
        "steps on the pooled text, the same tokens); 600 training and 100 test articles, BPE 4,000. Regenerate: "
        f"`python -m benchmarks.lm --devices {args.devices} --seeds {args.seeds}`.",
        "",
        *table(rows),
        "",
        "test log-ppl: mean token negative log-likelihood on the pooled test articles (lower is better; ±std over "
        "seeds); ppl: its exponential; token acc: teacher-forced next-token accuracy. For local-only the figures are "
        "the mean over devices of each device's own model; for heterogeneous runs the mean over devices of the "
        "global model of each device's architecture. worst client log-ppl: the worst device on its own held-out "
        "text. MB up: payload per participating device per round. est. train MiB: the training-memory estimate of "
        "each device's architecture (models/families.py).",
        "",
        "## One device's training step, per architecture (batch 16 x 64 tokens, vocabulary 4,000)",
        "",
        *table(probes),
        "",
        "estimated_mib: the training memory devices are fitted with (weights, gradients and AdamW states of every "
        "parameter, plus the activations autograd keeps); estimated_activations_mib against the bytes of the tensors "
        "autograd actually kept in one step (measured with saved_tensors_hooks); rss_peak_growth_mib: the growth of a "
        "fresh process's peak RSS over building the model and training it for 6 steps, which adds transient buffers "
        "of the backward pass and the allocator's overhead to what the estimate counts. tokens_per_s: median training "
        "throughput of one step on this machine (2 threads).",
        "",
    ]
    (RESULTS / "lm.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
