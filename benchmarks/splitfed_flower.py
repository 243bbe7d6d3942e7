"""Split learning on Flower (issue 17, item 5): writes benchmarks/results/splitfed_flower.{json,md}.

The ServerApp is the edge server and holds the edge parts; every split step is a message round
trip with the node that holds the device's data (activations, padding mask and targets up in
an ``ArrayRecord``, the gradient at the cut down). For each tenant of the split-learning
benchmark, the same config and seed trained by ``edgefm train`` in-process and with
``engine=flower`` (Flower's simulation engine, one virtual SuperNode per device, one thread
each), each in its own process:

1. agreement: the final metric, and the ledger's bytes and FLOPs row by row;
2. overhead: wall seconds of the whole command (process start, Ray's start-up, training,
   evaluation) on each engine, the messages exchanged, and the serialised bytes on the wire
   against the ledger's (the random stream's state, ~5 KB a message, and Flower's framing).

    python -m benchmarks.splitfed_flower [--tenants vit_mnist ...] [--rounds 2] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks._common import RESULTS, ROOT, write
from benchmarks.splitfed import TENANTS

RUNS = RESULTS / "runs" / "splitfed_flower"


def run(path: str, sets: list[str], out) -> float:
    """Wall seconds of one ``edgefm train`` in a fresh process."""
    cmd = [
        sys.executable,
        "-m",
        "edgefm.cli",
        "train",
        path,
        "--out",
        str(out),
        *[a for s in sets for a in ("--set", s)],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    subprocess.run(["rm", "-rf", str(out)], check=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def rows(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def tenant(name: str, rounds: int, steps: int) -> dict:
    path, base, metric = TENANTS[name]
    sets = [*base, f"rounds={rounds}", f"train.max_steps={steps}", "eval_every=1"]
    walls, ledgers = {}, {}
    for engine in ("inprocess", "flower"):
        out = RUNS / f"{name}-{engine}"
        walls[engine] = run(path, [*sets, f"engine={engine}"], out)
        ledgers[engine] = (rows(out / "metrics.jsonl"), rows(out / "clients.jsonl"))
    (a_rounds, a_clients), (b_rounds, b_clients) = ledgers["inprocess"], ledgers["flower"]
    keys = ("round", "client", "status", "bytes_up", "bytes_down", "flops", "server_flops")
    ok = [r for r in b_clients if r["status"] == "ok"]
    messages = sum(int(r["client_steps"]) + 1 for r in ok)
    ledger = sum(r["bytes_up"] + r["bytes_down"] for r in ok)
    return {
        "tenant": name,
        "metric": metric,
        "in-process": a_rounds[-1][metric],
        "Flower": b_rounds[-1][metric],
        "max diff": max(abs(x[metric] - y[metric]) for x, y in zip(a_rounds, b_rounds, strict=True)),
        "ledger rows equal": [[r.get(k) for k in keys] for r in a_clients]
        == [[r.get(k) for k in keys] for r in b_clients],
        "wall in-process s": walls["inprocess"],
        "wall Flower s": walls["flower"],
        "Flower / in-process": walls["flower"] / walls["inprocess"],
        "messages": messages,
        "extra s per message": (walls["flower"] - walls["inprocess"]) / messages,
        "wire / ledger bytes": sum(r["wire_bytes_up"] + r["wire_bytes_down"] for r in ok) / ledger,
    }


NOTES = """max diff: the largest difference of the metric between the engines over the rounds. ledger rows
equal: every client row's status, bytes, device FLOPs and edge FLOPs identical. Wall seconds are
whole commands: Flower's include starting Ray and one virtual SuperNode per device; extra s per
message = (Flower - in-process) / messages (a device's round is its steps + 1 messages). wire /
ledger bytes: the serialised records (payloads, activations, gradients, masks, targets, the
random stream's state, Flower's framing) against the ledger's payload, activation and gradient
bytes."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", nargs="+", default=list(TENANTS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    path = RESULTS / "splitfed_flower.json"
    kept = json.loads(path.read_text())["rows"] if path.is_file() else []
    new = [tenant(n, args.rounds, args.steps) for n in args.tenants]
    done = {r["tenant"] for r in new}
    rows_ = sorted([r for r in kept if r["tenant"] not in done] + new, key=lambda r: list(TENANTS).index(r["tenant"]))
    meta = {"rounds": args.rounds, "max_steps": args.steps, "seed": 0, "eval_every": 1}
    title = "Split learning on Flower: every split step a message round trip"
    print(write("splitfed_flower", title, rows_, meta, NOTES).read_text())


if __name__ == "__main__":
    main()
