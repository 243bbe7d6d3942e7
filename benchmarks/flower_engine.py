"""Flower engine evidence (issue 4): writes benchmarks/results/flower_engine.{json,md}.

1. Agreement: FedAvg-LoRA on MiniLM/SST-2, same seed and config, in-process vs the Flower
   simulation engine: final accuracy (goal: within 0.5 points) and ledger bytes.
2. Overhead: 8 clients x 3 rounds, Flower simulation wall time / in-process wall time (goal:
   at most 1.5x), and peak memory of the whole process tree (driver + Ray workers).

    python -m benchmarks.flower_engine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from benchmarks._common import RESULTS, machine, table

ROOT = Path(__file__).resolve().parents[1]
ONE_ACTOR = "flower.parallel=1,flower.client_cpus=2"  # one client actor, both cores' threads


def role(proc: psutil.Process) -> str:
    """Which part of a run a process plays (for the breakdown of peak PSS)."""
    name, cmd = proc.name(), " ".join(proc.cmdline())
    if name.startswith("ray::ClientAppActor"):
        return "client actors"
    if name.startswith(("raylet", "gcs_server", "ray::")) or "/ray/" in cmd:
        return "Ray's own processes"
    if "flwr-simulation" in cmd:
        return "ServerApp (flwr-simulation)"
    if any(k in cmd for k in ("flower-superlink", "flower-superexec", "bin/flwr ")):
        return "SuperLink, SuperExec, flwr run"
    return "edgefm (launcher / in-process engine)"


ROLLUP = {"Rss": "rss", "Pss": "pss", "Pss_Anon": "anonymous", "Pss_File": "file", "Pss_Shmem": "shared"}
KINDS = ("heap", "anonymous", "file", "shared")


def memory_of(pid: int) -> dict[str, float]:
    """MB a process holds, from one read of smaps_rollup (``rss``, ``pss``) and the [heap] entry of
    smaps, which comes early, so sampling stays cheap; its PSS by kind (``KINDS``): the brk heap,
    where glibc serves blocks below its mmap threshold; other anonymous memory (large blocks, other
    threads' malloc arenas); files (libraries, model.safetensors); shared memory."""
    out = dict.fromkeys(ROLLUP.values(), 0.0)
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ROLLUP:
                out[ROLLUP[key]] = int(rest.split()[0]) / 1024
    heap, inside = 0.0, False
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            if line.rstrip().endswith("[heap]"):
                inside = True
            elif inside and line.startswith("Pss:"):
                heap = int(line.split()[1]) / 1024
                break
    out["heap"] = heap
    out["anonymous"] -= heap  # the heap is anonymous too
    return out


def run_cli(args: list[str]) -> tuple[float, float, float, dict[str, float], dict[str, dict[str, float]]]:
    """Wall seconds, peak RSS and peak PSS (MB) of the process tree of one ``edgefm train`` run,
    the peak PSS by the role of each process, and by role and kind of memory (``memory_of``).

    RSS counts every page a process maps, so pages that several processes share (the frozen
    backbone memory-mapped from its safetensors file, shared libraries) are counted once per
    process; PSS (proportional set size) divides each shared page among its sharers, so a sum of
    PSS over processes is the memory they really take together."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefm.cli", "train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak, peak_pss, stop = [0.0], [0.0], threading.Event()
    parts: dict[str, float] = {}
    kinds: dict[str, dict[str, float]] = {}

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                # Ray's raylet/GCS start as their own sessions: count ray processes of this user too
                procs += [
                    p
                    for p in psutil.process_iter(["name"])
                    if p.info["name"]
                    and p.info["name"].startswith(("raylet", "gcs_server", "ray::"))
                    and p.pid not in {q.pid for q in procs}
                ]
                rss = pss = 0
                by_role: dict[str, float] = {}
                by_kind: dict[str, dict[str, float]] = {}
                for p in procs:
                    try:
                        mem = memory_of(p.pid)  # rss and pss from one snapshot
                        who = role(p)
                    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):  # it ended meanwhile
                        continue
                    rss, pss = rss + mem["rss"], pss + mem["pss"]
                    by_role[who] = by_role.get(who, 0.0) + mem["pss"]
                    mine = by_kind.setdefault(who, {})
                    for k in KINDS:
                        mine[k] = mine.get(k, 0.0) + mem[k]
                peak[0] = max(peak[0], rss)
                if pss > peak_pss[0]:
                    peak_pss[0] = pss
                    parts.clear()
                    parts.update(by_role)
                    kinds.clear()
                    kinds.update(by_kind)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            time.sleep(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    code = proc.wait()
    stop.set()
    t.join()
    if code != 0:
        raise SystemExit(f"edgefm train {' '.join(args)} failed with exit code {code}")
    return time.perf_counter() - start, peak[0], peak_pss[0], parts, kinds


FLOOR = """
import sys
import torch
torch.set_num_threads(1)
import edgefm.fl.flower  # the ServerApp and ClientApp module every process of a Flower run imports
from edgefm import config
from edgefm.fl.scenario import build
sc = build(config.load(sys.argv[1], sys.argv[2:]))
anon = sum(int(x.split()[1]) for x in open("/proc/self/smaps_rollup") if x.startswith("Anonymous:"))
print(anon / 1024)
"""


def floor(args: list[str]) -> float:
    """MB of anonymous memory (heap: never shared between processes) of one process that imports
    edgefm's Flower apps (torch, transformers, datasets, flwr) and builds the run's scenario,
    before it trains anything: the least each such process of a run adds. Library and weight
    files mapped from disk are left out (several processes share them), so this understates."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sets = [a for a in args if a != "--set"]
    out = subprocess.run([sys.executable, "-c", FLOOR, *sets], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the floor probe failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.split()[-1])


def heap_text(kinds: dict[str, dict[str, dict[str, float]]], actors: int) -> str:
    """What the by-kind table says about the actors' heaps (the defaults' runs)."""
    solo = kinds["inprocess"].get("edgefm (launcher / in-process engine)", {}).get("heap", 0.0)
    each = kinds["flower"].get("client actors", {}).get("heap", 0.0) / actors
    return (
        f"With the defaults each of the {actors} client actors peaks at {each:.0f} MB of brk heap, "
        f"{each / solo:.2f}x the in-process engine's whole heap ({solo:.0f} MB): every process that trains "
        "reaches the same high-water mark, because training's blocks come from the heap and a heap is "
        "not given back while a block above the freed ones is still in use. Sharing the weights cannot "
        "remove that; fewer training processes, or a heap that hands memory back "
        "(mmap_threshold_kb, below), can."
    )


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-agreement", action="store_true", help="rerun only part 2; part 1 from the saved JSON")
    ap.add_argument(
        "--also",
        default="mmap_threshold_kb=128",
        help="overrides (comma-separated) part 2 also runs both engines with, side by side ('' for none)",
    )
    ap.add_argument(
        "--layouts",
        default=f"{ONE_ACTOR};{ONE_ACTOR},mmap_threshold_kb=128",
        help="Flower-only settings part 2 also runs, against the in-process defaults: layouts separated by ';', "
        "each comma-separated overrides (default: one client actor with both cores' threads, as the in-process "
        "engine trains, then the same with mmap_threshold_kb=128; '' for none)",
    )
    args = ap.parse_args()
    out = ROOT / "runs" / "bench-flower"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    rows = []
    # 1. agreement on the demo scenario (10 clients, 5 rounds)
    agree, agree_date = {}, machine()["date"]
    if args.skip_agreement:
        saved = json.loads((RESULTS / "flower_engine.json").read_text())
        agree = {a["engine"]: a for a in saved["agreement"]}
        agree_date = saved.get("agreement_date", saved["machine"]["date"])
    for engine in () if args.skip_agreement else ("inprocess", "flower"):
        d = out / f"demo-{engine}"
        secs, peak, *_ = run_cli(["configs/demo.yaml", "--out", str(d), "--set", f"engine={engine}"])
        s = summary(d)
        agree[engine] = {
            "engine": engine,
            "final_accuracy": s["final_accuracy"],
            "bytes_up": s["bytes_up"],
            "bytes_down": s["bytes_down"],
            "wall_s": secs,
            "peak_rss_mb": peak,
        }
    gap = 100 * abs(agree["flower"]["final_accuracy"] - agree["inprocess"]["final_accuracy"])
    # 2. overhead: 8 clients x 3 rounds
    common = ["configs/demo.yaml", "--set", "clients=8", "--set", "rounds=3", "--set", "data.max_train=1600"]
    breakdown, memory_kinds = {}, {}

    def small(engine: str, settings: list[str], label: str, folder: str) -> None:
        """One run of part 2 into ``folder``: its row, and its peak PSS by role and kind under ``label``."""
        d = out / folder
        sets = [a for x in settings for a in ("--set", x)]
        secs, peak, pss, parts, kinds = run_cli([*common, *sets, "--out", str(d), "--set", f"engine={engine}"])
        breakdown[label], memory_kinds[label] = parts, kinds
        s = summary(d)
        rows.append(
            {
                "engine": engine,
                "settings": ",".join(settings) or "defaults",
                "clients": 8,
                "rounds": 3,
                "wall_s": secs,
                "peak_rss_mb": peak,
                "peak_pss_mb": pss,
                "final_accuracy": s["final_accuracy"],
                "bytes_up": s["bytes_up"],
            }
        )

    also = [x for x in args.also.split(",") if x]
    for extra in ([], also) if also else ([],):
        for engine in ("inprocess", "flower"):
            label = f"{engine}, {args.also}" if extra else engine
            small(engine, extra, label, f"small-{engine}{'-also' if extra else ''}")
    layouts = [x for x in args.layouts.split(";") if x]
    for i, layout in enumerate(layouts):  # Flower only: layouts the in-process engine has no counterpart of
        small("flower", layout.split(","), f"flower, {layout}", f"small-flower-layout{i}")
    process_floor = floor(common)
    builders = ("ServerApp (flwr-simulation)", "client actors")  # the processes that build the scenario
    python_processes = 1 + (os.cpu_count() or 1)  # the ServerApp and one actor per core
    fixed = sum(v for k, v in breakdown["flower"].items() if k not in builders)  # launcher, Ray's, Flower's own
    floor_mb = python_processes * process_floor + fixed
    floor_ratio = floor_mb / rows[0]["peak_pss_mb"]
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    pss_ratio = rows[1]["peak_pss_mb"] / rows[0]["peak_pss_mb"]
    # what the run holds besides its client actors, at its peak, against the in-process engine's whole peak
    others = sum(v for k, v in breakdown["flower"].items() if k != "client actors")
    room = 1.5 * rows[0]["peak_pss_mb"] - others
    one = breakdown.get(f"flower, {ONE_ACTOR}", {}).get("client actors")
    room_text = (
        f", {room / one:.2f}x what one actor training with both cores' threads took ({one:.0f} MB)" if one else ""
    )
    bound_text = (
        f"At the defaults' peak the processes other than the client actors (ServerApp, Ray's, Flower's, the "
        f"launcher) held {others:.0f} MB, {others / rows[0]['peak_pss_mb']:.2f}x the in-process engine's whole "
        f"peak, so a peak PSS within 1.5x would leave the client actors {room:.0f} MB{room_text}. The ServerApp alone imports and builds what the in-process engine "
        "does (it aggregates and evaluates the global model), and Ray's and Flower's own processes come with "
        "Flower's simulation runtime; fewer Python processes (the ServerApp inside the launcher, as the "
        "deprecated run_simulation had it: 2.37x measured 2026-12-03) would be another runtime."
    )
    also_text, layout_lines = "", []
    inp_also = next((r for r in rows if r["engine"] == "inprocess" and r["settings"] != "defaults"), None)
    for lay in rows[len(rows) - len(layouts) :]:
        mine = (
            f" and {lay['peak_pss_mb'] / inp_also['peak_pss_mb']:.2f}x the in-process engine's with {args.also}"
            if inp_also is not None and args.also and args.also in lay["settings"]
            else ""
        )
        layout_lines.append(
            f"- {lay['settings']}: peak PSS {lay['peak_pss_mb']:.0f} MB, "
            f"{lay['peak_pss_mb'] / rows[0]['peak_pss_mb']:.2f}x the in-process engine's with the defaults{mine}; "
            f"wall time {lay['wall_s'] / rows[0]['wall_s']:.2f}x; accuracy {lay['final_accuracy']:.4f} against "
            f"{rows[0]['final_accuracy']:.4f}, bytes {'identical' if lay['bytes_up'] == rows[0]['bytes_up'] else 'DIFFER'}."
        )
    layout_text = (
        "Other Flower layouts, same run (one client actor training with both cores' threads is what the "
        "in-process engine does; the defaults run one actor per core, one thread each):\n\n" + "\n".join(layout_lines)
        if layout_lines
        else ""
    )
    if also:  # the same two runs with --also: against the in-process engine with and without it
        base, inp, flo = rows[0], rows[2], rows[3]
        also_text = (
            f"With {args.also} (both engines, same run): Flower's peak PSS {flo['peak_pss_mb']:.0f} MB, "
            f"{flo['peak_pss_mb'] / base['peak_pss_mb']:.2f}x the in-process engine's with the defaults and "
            f"{flo['peak_pss_mb'] / inp['peak_pss_mb']:.2f}x its own with the setting "
            f"({inp['peak_pss_mb']:.0f} MB); wall time {flo['wall_s'] / base['wall_s']:.2f}x and "
            f"{flo['wall_s'] / inp['wall_s']:.2f}x (the setting cost the in-process engine "
            f"{inp['wall_s'] / base['wall_s']:.2f}x its time and Flower {flo['wall_s'] / rows[1]['wall_s']:.2f}x: "
            "every page of an activation handed back is faulted in again)."
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(),
        "agreement": list(agree.values()),
        "accuracy_gap_points": gap,
        "overhead": rows,
        "time_ratio": ratio,
        "pss_ratio": pss_ratio,
        "pss_breakdown_mb": breakdown,
        "pss_by_kind_mb": memory_kinds,
        "process_floor_mb": process_floor,
        "floor_ratio": floor_ratio,
        "floor_mb": floor_mb,
        "agreement_date": agree_date,
        "also": also_text,
        "layout": layout_text,
    }
    (RESULTS / "flower_engine.json").write_text(json.dumps(payload, indent=2))

    m = payload["machine"]
    lines = [
        "# The Flower engine vs the in-process engine",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, flwr 1.41.0, {m['date']}. "
        "Regenerate: `python -m benchmarks.flower_engine`. Wall time includes process start-up "
        "(model load; Ray start for Flower). Flower runs one client per core, one thread each.",
        "",
        "## Agreement: FedAvg-LoRA, MiniLM, SST-2, demo config (10 clients, 5 rounds, seed 0)",
        "",
        f"Measured {payload['agreement_date']}.",
        "",
        *table(list(agree.values())),
        "",
        f"Accuracy gap: {gap:.3f} points (goal: <= 0.5). Ledger bytes: "
        f"{'identical' if agree['flower']['bytes_up'] == agree['inprocess']['bytes_up'] else 'DIFFER'}.",
        "",
        "## Overhead: 8 clients x 3 rounds (1,600 training examples)",
        "",
        *table(rows),
        "",
        f"Flower / in-process wall time: {ratio:.2f}x (goal: <= 1.5x). Peak memory of the whole process tree "
        f"(driver, Ray's processes and actors): RSS {rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}x, PSS "
        f"{pss_ratio:.2f}x (goal: <= 1.5x). RSS counts a page that several processes map once per process; "
        "PSS divides it among them. The frozen backbone is not copied per actor: transformers loads its weights "
        "as a copy-on-write memory map of model.safetensors, never written (tests/test_models.py checks the "
        "weights lie in that mapping), so the actors share its pages. Flower runs as Flower 1.41 documents a "
        "simulation: `flwr run` against a SuperLink started with `--simulation` (edgefm starts it), so the "
        "ServerApp is a process of its own beside edgefm's launcher. The launcher holds no scenario and never "
        "imports torch while the run goes (`fl/outline.py`: a child process builds and checks the scenario, "
        "then ends); it follows the run folder. Peak PSS by process role (MB):",
        "",
        *table(
            [
                {"role": k, **{e: round(breakdown[e].get(k, 0.0)) for e in breakdown}}
                for k in sorted({k for b in breakdown.values() for k in b})
            ]
        ),
        "",
        "The same peaks by kind of memory (MB of PSS; heap: the brk heap, where glibc serves blocks below its "
        "mmap threshold; anonymous: other anonymous memory, including large blocks and other threads' malloc "
        "arenas; file: libraries and model.safetensors; shared: shared memory):",
        "",
        *table(
            [
                {
                    "engine": e,
                    "role": r,
                    **{k: round(memory_kinds[e][r].get(k, 0.0)) for k in KINDS},
                }
                for e in memory_kinds
                for r in sorted(memory_kinds[e])
            ]
        ),
        "",
        heap_text(memory_kinds, python_processes - 1),
        "",
        f"The floor of this layout. One Python process that imports edgefm's Flower apps (torch, transformers, "
        f"datasets, flwr) and builds this scenario, before training anything, holds {process_floor:.0f} MB of "
        "anonymous memory (its heap, never shared; the library and weight files it maps are left out, so this "
        f"understates). A Flower run on this machine has {python_processes} such "
        f"processes (the ServerApp and one client actor per core); with the launcher, Ray's and Flower's own "
        f"processes ({fixed:.0f} MB above) that is {floor_mb:.0f} MB, {floor_ratio:.2f}x the in-process peak, "
        "before any client trains; each training actor then adds its activations and optimizer state, as the one "
        f"in-process engine does once. {bound_text}",
        "",
        also_text,
        "",
        layout_text,
        "",
    ]
    (RESULTS / "flower_engine.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
