"""A Flower deployment under load (issue 22, "Load"): writes benchmarks/results/flower_load.{json,md}.

1. **Sixteen SuperNodes, two killed.** A SuperLink and 16 SuperNodes on 127.0.0.1, each its own
   process (``edgefm.fl.loopback``), run 5 rounds of FedAvg-LoRA on a tiny BERT (SST-2). While
   round 2 is under way two nodes are killed with SIGKILL (with their ClientApp) and started
   again a few seconds later; they come back under new node ids and the server finds their
   partitions again. Checked from the run's own ledger: every round has exactly one row per
   client (no update lost without a reason, none counted twice), its accepted count equals its
   ``ok`` rows, and the killed clients train again after their restart. Reported: wall time per
   round and the peak memory of each node's process tree (RSS and PSS).
2. **The largest payload.** Two SuperNodes, one round each of MiniLM with LoRA, MiniLM fully
   fine-tuned (every weight up and down) and RaFFM subnetworks of the full model, against the
   limits Flower 1.41 puts on a message.

    python -m benchmarks.flower_load [--part load|payload|render]
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks._common import RESULTS, machine, table
from edgefm.fl.loopback import Loopback

ROOT = Path(__file__).resolve().parents[1]
OUT = RESULTS / "flower_load.json"
NODES, ROUNDS, KILLED = 16, 5, (3, 11)
LOAD = (
    f"model.name=tiny_bert data.max_train={NODES * 40} data.max_test=200 data.max_length=32 rounds={ROUNDS} "
    f"clients={NODES} train.lr=0.01 train.head_lr=0.01 flower.round_timeout=300 eval_every={ROUNDS} seed=0"
)


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


class Sampler:
    """Peak RSS and PSS (MB) of each named process tree, sampled every second."""

    def __init__(self, lb: Loopback):
        self.lb, self.peak, self.stop = lb, {}, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            for name, proc in list(self.lb.procs.items()):
                rss = pss = 0.0
                try:
                    root = psutil.Process(proc.pid)
                    for p in [root, *root.children(recursive=True)]:
                        m = p.memory_full_info()
                        rss, pss = rss + m.rss / 2**20, pss + m.pss / 2**20
                except psutil.Error:
                    continue
                old = self.peak.get(name, (0.0, 0.0))
                self.peak[name] = (max(old[0], rss), max(old[1], pss))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def load(folder: Path) -> dict:
    run_dir = folder / "run"
    kills = []
    with Loopback(folder) as lb, Sampler(lb) as sampler:
        lb.start_superlink()
        for k in range(NODES):
            lb.start_node(k, NODES)
        result: dict = {}
        runner = threading.Thread(
            target=lambda: result.update(done=lb.run(ROOT / "configs" / "tiny.yaml", LOAD, run_dir, timeout=1800))
        )
        t0 = time.perf_counter()
        runner.start()
        while runner.is_alive() and len(rows(run_dir / "metrics.jsonl")) < 1:
            time.sleep(0.5)
        time.sleep(5)  # round 2 is under way: its tasks are out
        for k in KILLED:
            lb.kill(f"node{k}", signal.SIGKILL)
            kills.append({"node": k, "at_s": round(time.perf_counter() - t0, 1), "round": 2})
        time.sleep(5)
        for k in KILLED:
            lb.start_node(k, NODES)
        runner.join()
        wall = time.perf_counter() - t0
    done = result["done"]
    metrics, clients = rows(run_dir / "metrics.jsonl"), rows(run_dir / "clients.jsonl")
    if len(metrics) != ROUNDS:
        raise SystemExit(f"the run did not finish: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    per_round = []
    for m in metrics:
        rnd = m["round"]
        these = [c for c in clients if c["round"] == rnd]
        ids = [c["client"] for c in these]
        per_round.append(
            {
                "round": rnd,
                "rows": len(these),
                "distinct_clients": len(set(ids)),
                "accepted": m["accepted"],
                "ok_rows": sum(c["status"] == "ok" for c in these),
                "dropped": {c["client"]: c["reason"][:80] for c in these if c["status"] != "ok"},
                "wall_s": m["wall_s"],
                "accuracy": m.get("accuracy"),
            }
        )
    checks = {
        "one_row_per_client_per_round": all(r["rows"] == r["distinct_clients"] == NODES for r in per_round),
        "accepted_equals_ok_rows": all(r["accepted"] == r["ok_rows"] for r in per_round),
        "killed_train_again_by_round_3": all(
            c["status"] == "ok" for c in clients if c["round"] >= 3 and c["client"] in KILLED
        ),
        "only_killed_dropped": all(set(r["dropped"]) <= set(KILLED) for r in per_round),
    }
    nodes = [v for k, v in sampler.peak.items() if k.startswith("node")]
    return {
        "nodes": NODES,
        "rounds": ROUNDS,
        "config": LOAD,
        "kills": kills,
        "per_round": per_round,
        "checks": checks,
        "wall_s": round(wall, 1),
        "node_peak_rss_mb": [round(v[0]) for v in nodes],
        "node_peak_pss_mb": [round(v[1]) for v in nodes],
        "superlink_peak_rss_mb": round(sampler.peak.get("superlink", (0, 0))[0]),
        "superlink_peak_pss_mb": round(sampler.peak.get("superlink", (0, 0))[1]),
    }


PAYLOADS = {
    "MiniLM, LoRA r=8": "",
    "MiniLM, full fine-tuning": "model.finetune=full",
    "MiniLM, RaFFM subnetworks": "model.finetune=full algorithm.name=raffm",
}
PAYLOAD_BASE = (
    "data.max_train=64 data.max_test=50 data.max_length=32 rounds=1 clients=2 train.max_steps=1 model.name=minilm "
    "flower.round_timeout=300 seed=0"
)


def payload(folder: Path) -> dict:
    from flwr.common import GRPC_MAX_MESSAGE_LENGTH
    from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE

    out = {"grpc_max_message_bytes": GRPC_MAX_MESSAGE_LENGTH, "array_chunk_bytes": FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE}
    cases = []
    for name, extra in PAYLOADS.items():
        sub = folder / name.split(",")[1].strip().split()[0].lower()
        sub.mkdir(parents=True)
        with Loopback(sub) as lb:
            lb.start_superlink()
            for k in range(2):
                lb.start_node(k, 2)
            t0 = time.perf_counter()
            done = lb.run(ROOT / "configs" / "tiny.yaml", f"{PAYLOAD_BASE} {extra}", sub / "run", timeout=900)
            wall = time.perf_counter() - t0
        clients = rows(sub / "run" / "clients.jsonl")
        if not clients:
            raise SystemExit(f"{name}: no ledger: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        cases.append(
            {
                "payload": name,
                "status": [c["status"] for c in clients],
                "max_bytes_up": max(c["bytes_up"] for c in clients),
                "max_wire_bytes_up": max(c.get("wire_bytes_up", 0) for c in clients),
                "max_wire_bytes_down": max(c.get("wire_bytes_down", 0) for c in clients),
                "wall_s": round(wall, 1),
            }
        )
    out["cases"] = cases
    return out


def render(res: dict) -> str:
    m = res.get("machine") or machine()
    lines = [
        "# A Flower deployment under load",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, {m['date']}.",
        "",
    ]
    if "load" in res:
        r = res["load"]
        lines += [
            f"`python -m benchmarks.flower_load --part load`: a SuperLink and {r['nodes']} SuperNodes on 127.0.0.1, "
            f"each its own process (`edgefm.fl.loopback`), {r['rounds']} rounds of FedAvg-LoRA on a tiny BERT "
            f"(SST-2, seed 0, `{r['config']}`). During round 2, nodes {', '.join(str(k['node']) for k in r['kills'])} "
            "were killed with SIGKILL (with their ClientApp) and started again 5 s later; a restarted SuperNode "
            "comes back under a new node id and the server asks it its partition before the next round.",
            "",
            *table(
                [
                    {
                        "round": p["round"],
                        "ledger rows": p["rows"],
                        "distinct clients": p["distinct_clients"],
                        "accepted": p["accepted"],
                        "ok rows": p["ok_rows"],
                        "dropped (reason)": "; ".join(f"{c}: {why}" for c, why in p["dropped"].items()) or "none",
                        "wall s": f"{p['wall_s']:.1f}",
                        "accuracy": f"{p['accuracy']:.3f}" if p["accuracy"] is not None else "",
                    }
                    for p in r["per_round"]
                ]
            ),
            "",
            "Every round's wall time is dominated by Flower starting a ClientApp process for every message "
            "(subprocess isolation: each imports torch and transformers and rebuilds the client's data) with 16 "
            "nodes on 2 cores; round 5 also evaluates. The accuracy is that of a randomly initialised tiny BERT "
            "after 5 short rounds: this run measures the deployment, not learning.",
            "",
            "Checks: "
            + ", ".join(f"{k.replace('_', ' ')}: **{'yes' if v else 'NO'}**" for k, v in r["checks"].items()),
            "",
            f"Whole run {r['wall_s']:.0f} s. Peak memory of one node's process tree (SuperNode + ClientApp): "
            f"RSS {min(r['node_peak_rss_mb'])}–{max(r['node_peak_rss_mb'])} MB, PSS "
            f"{min(r['node_peak_pss_mb'])}–{max(r['node_peak_pss_mb'])} MB; the SuperLink with the ServerApp: "
            f"RSS {r['superlink_peak_rss_mb']} MB, PSS {r['superlink_peak_pss_mb']} MB.",
            "",
        ]
    if "payload" in res:
        p = res["payload"]
        lines += [
            "## The largest payload",
            "",
            "`--part payload`: two SuperNodes, one round of one step, MiniLM (22.7M parameters). Sizes per client.",
            "",
            *table(
                [
                    {
                        "payload": c["payload"],
                        "status": ", ".join(c["status"]),
                        "ledger bytes up": f"{c['max_bytes_up'] / 1e6:.2f} MB",
                        "wire bytes up": f"{c['max_wire_bytes_up'] / 1e6:.2f} MB",
                        "wire bytes down": f"{c['max_wire_bytes_down'] / 1e6:.2f} MB",
                        "wall s": f"{c['wall_s']:.0f}",
                    }
                    for c in p["cases"]
                ]
            ),
            "",
            f"Flower 1.41 sends a message's arrays as separate objects, each cut into chunks of "
            f"{p['array_chunk_bytes'] / 2**20:.0f} MiB (`FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE`); its "
            f"{p['grpc_max_message_bytes'] / 2**30:.0f} GiB limit (`GRPC_MAX_MESSAGE_LENGTH`) bounds one request, "
            "not a model. The largest payload tried here, MiniLM fully fine-tuned (91 MB each way per client), "
            "passed; larger models were not tried on this machine.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["all", "load", "payload", "render"], default="all")
    args = ap.parse_args()
    res = json.loads(OUT.read_text()) if OUT.is_file() else {}
    res["machine"] = machine() if args.part != "render" else res.get("machine", machine())
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "load"):
            res["load"] = load(Path(tmp) / "load")
            OUT.write_text(json.dumps(res, indent=1))
        if args.part in ("all", "payload"):
            res["payload"] = payload(Path(tmp) / "payload")
            OUT.write_text(json.dumps(res, indent=1))
    (RESULTS / "flower_load.md").write_text(render(res))
    print(render(res))


if __name__ == "__main__":
    main()
