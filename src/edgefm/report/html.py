"""Run outputs: ``summary.json``, plots and one self-contained HTML page per run (or a
comparison page over several runs). Everything is rebuilt from the files a run wrote
(``config.yaml``, ``metrics.jsonl``, ``clients.jsonl``), so ``edgefm report`` can regenerate it.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from edgefm import EdgefmError
from edgefm.report import plots, units
from edgefm.report.compare import config_diff, seed_groups


def read_run(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise EdgefmError(f"{str(run_dir)!r} is not a run folder; expected metrics.jsonl in it")
    rounds = _json_lines(metrics)
    clients_file = run_dir / "clients.jsonl"
    clients = _json_lines(clients_file) if clients_file.is_file() else []
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
        summary_file = run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    except (ValueError, yaml.YAMLError) as exc:
        raise EdgefmError(
            f"{str(run_dir)!r}: a corrupt config.yaml or summary.json ({type(exc).__name__}); expected a run folder written by edgefm"
        ) from None
    if not isinstance(cfg, dict) or not isinstance(summary, dict):
        raise EdgefmError(
            f"{str(run_dir)!r}: config.yaml or summary.json is not a mapping; expected a run folder written by edgefm"
        )
    name = summary.get("name") or run_dir.name
    evals = _json_lines(run_dir / "evals.jsonl") if (run_dir / "evals.jsonl").is_file() else []
    return {"name": name, "dir": run_dir, "rounds": rounds, "clients": clients, "evals": evals, "config": cfg,
            "summary": summary}  # fmt: skip


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for k, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise EdgefmError(
                    f"{str(path)!r}, line {k}: not JSON (a corrupt or truncated file); expected one JSON object per line"
                ) from None
            if not isinstance(rows[-1], dict):
                raise EdgefmError(f"{str(path)!r}, line {k}: not a JSON object; expected one per line")
    return rows


def task_of(run: dict[str, Any]) -> str:
    return run["config"].get("task", "classify")


def headline(run: dict[str, Any]) -> tuple[str, str]:
    """(the global metric a run is judged by, its per-client counterpart) for the run's task."""
    return ("log_ppl", "client_log_ppl_mean") if task_of(run) == "lm" else ("accuracy", "client_acc_mean")


def finish_run(run_dir: Path, outline) -> None:
    """Write what a finished run folder holds beside the round loop's files, ``summary.json``
    and ``report.html``: for every engine, a Flower deployment's server included. ``outline``:
    the run's ``fl.outline.Outline`` (the launcher of a Flower run holds no scenario)."""
    run = read_run(run_dir)
    counts = outline.parameters
    extra = {
        "parameters_total": counts["total"],
        "parameters_trainable": counts["trainable"],
        "trainable_percent": 100.0 * counts["trainable"] / counts["total"],
        "devices": outline.devices,
    }
    if outline.label_mix is not None:  # each client's training examples per label
        extra["label_mix"] = outline.label_mix
    (run_dir / "summary.json").write_text(json.dumps(build_summary(run, extra), indent=2))
    write_report([run_dir], run_dir / "report.html")


def build_summary(run: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline numbers of a run from its round and client rows (accuracy for classification;
    log-perplexity, perplexity and token accuracy, overall and per domain, for language models)."""
    rounds, clients, cfg = run["rounds"], run["clients"], run["config"]
    metric, _ = headline(run)
    evaluated = [r for r in rounds if metric in r]
    last = evaluated[-1] if evaluated else {}
    ok = [c for c in clients if c["status"] == "ok"]
    n_rounds = max(len(rounds), 1)
    if task_of(run) == "lm":
        figures = {
            "final_log_ppl": last.get("log_ppl"),
            "final_ppl": last.get("ppl"),
            "final_token_acc": last.get("token_acc"),
            "best_log_ppl": min((r["log_ppl"] for r in evaluated), default=None),
            "client_log_ppl_mean": last.get("client_log_ppl_mean"),
            "client_log_ppl_max": last.get("client_log_ppl_max"),  # the worst client
            "client_token_acc_mean": last.get("client_token_acc_mean"),
            **{f"final_{k}": v for k, v in last.items() if "/" in k},  # per domain
        }
    else:
        figures = {
            "final_accuracy": last.get("accuracy"),
            "best_accuracy": max((r["accuracy"] for r in evaluated), default=None),
            "client_acc_mean": last.get("client_acc_mean"),
            "client_acc_min": last.get("client_acc_min"),
        }
    summary = {
        "name": run["name"],
        "task": task_of(run),
        "algorithm": cfg.get("algorithm", {}).get("name"),
        "dataset": cfg.get("data", {}).get("name") or cfg.get("data", {}).get("path"),
        "model": cfg.get("model", {}).get("name"),
        "seed": cfg.get("seed"),
        "rounds": len(rounds),
        "clients": cfg.get("clients"),
        **figures,
        "bytes_up": sum(r["bytes_up"] for r in rounds),
        "bytes_down": sum(r["bytes_down"] for r in rounds),
        "upload_mb_per_client_round": (sum(c["bytes_up"] for c in ok) / max(len(ok), 1)) / 1e6,
        "flops": sum(r["flops"] for r in rounds),
        "flops_per_round": sum(r["flops"] for r in rounds) / n_rounds,
        "sim_seconds": rounds[-1]["sim_elapsed_s"] if rounds else 0.0,
        "sim_seconds_per_round": (rounds[-1]["sim_elapsed_s"] / n_rounds) if rounds else 0.0,
        "joules": sum(r["joules"] for r in rounds),
        "dollars": sum(r["dollars"] for r in rounds),
        "wall_seconds": sum(r["wall_s"] for r in rounds),
        # clients per architecture (the one a device trains; declined devices are not counted)
        "architectures": dict(sorted(Counter({c["client"]: c["arch"] for c in ok if "arch" in c}.values()).items())),
        "rejected_updates": sum(r["rejected"] for r in rounds),
        "dropped_updates": sum(r["dropped"] for r in rounds),
    }
    summary.update(extra or {})
    return summary


def img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def table_html(rows: list[dict[str, Any]], columns: list[str], raw: tuple[str, ...] = ()) -> str:
    """A table in human units (``units.py``), in a box that scrolls sideways on a narrow page;
    ``raw`` columns hold HTML the caller escaped (e.g. links)."""
    head = "".join(f"<th>{html.escape(units.header(c))}</th>" for c in columns)

    def cell(c: str, v: Any) -> str:
        return str(v) if c in raw else units.cell(c, v)

    body = "".join("<tr>" + "".join(f"<td>{cell(c, r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _device_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    acc: dict[int, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for c in run["clients"]:
        row = acc[c["client"]]
        row["device"], row["tier"] = c["client"], c["tier"]
        for k in ("num_examples", "flops", "bytes_up", "bytes_down", "seconds", "joules", "dollars"):
            row[k] += c[k]
        row["rounds"] += 1
    return [dict(acc[k]) for k in sorted(acc)]


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}h1{font-size:1.5em}
code{background:#f3f3f3;padding:1px 4px}pre{overflow-x:auto;max-width:100%}.swatch{display:inline-block;
width:.8em;height:.8em;margin-right:.4em;border-radius:2px}"""

SUMMARY_COLUMNS = [
    "name",
    "algorithm",
    "dataset",
    "model",
    "seed",
    "rounds",
    "FIGURES",
    "upload_mb_per_client_round",
    "flops_per_round",
    "sim_seconds_per_round",
    "joules",
    "wall_seconds",
]
FIGURES = {
    "classify": ["final_accuracy", "client_acc_mean", "client_acc_min"],
    "lm": ["final_log_ppl", "final_ppl", "final_token_acc", "client_log_ppl_mean", "client_log_ppl_max"],
}
ROUND_FIGURES = {
    "classify": ["accuracy", "client_acc_mean", "client_acc_min"],
    "lm": ["log_ppl", "ppl", "token_acc", "client_log_ppl_mean", "client_log_ppl_max"],
}
ROUND_COLUMNS = [
    "round",
    "participants",
    "accepted",
    "rejected",
    "dropped",
    "FIGURES",
    "bytes_up",
    "bytes_down",
    "flops",
    "sim_round_s",
    "sim_elapsed_s",
    "joules",
    "wall_s",
]


def domain_section(run: dict[str, Any]) -> list[str]:
    """A language model's last evaluation per domain: log-perplexity, perplexity, token accuracy."""
    evaluated = [r for r in run["rounds"] if "log_ppl" in r]
    if not evaluated:
        return []
    last = evaluated[-1]
    domains = sorted({k.split("/", 1)[1] for k in last if k.startswith("log_ppl/")})
    rows = [{"domain": d, **{m: last.get(f"{m}/{d}") for m in ("log_ppl", "ppl", "token_acc")}} for d in domains]
    rows.append({"domain": "all", **{m: last.get(m) for m in ("log_ppl", "ppl", "token_acc")}})
    return [
        f"<h2>Per domain — {html.escape(run['name'])} (round {last['round']})</h2>",
        table_html(rows, ["domain", "log_ppl", "ppl", "token_acc"]),
    ]


def robustness_section(run_dir: Path) -> list[str]:
    """A table of ``robustness.json`` (written by ``edgefm robust --run``), if the run has one."""
    path = Path(run_dir) / "robustness.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = []
    for r in data["results"]:
        ref = data.get("chatgpt_reference", {}).get(r["suite"], {})
        rows.append(
            {
                "suite": r["suite"],
                "n": r.get("n"),
                "accuracy": r.get("accuracy"),
                "attack_success_rate": r.get("attack_success_rate"),
                "macro_f1": r.get("macro_f1"),
                "drop_from_clean": r.get("drop_from_clean"),
                "chatgpt": ref.get("attack_success_rate", ref.get("macro_f1")),
                "note": r.get("skipped", ""),
            }
        )
    cols = ["suite", "n", "accuracy", "attack_success_rate", "macro_f1", "drop_from_clean", "chatgpt", "note"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.get("notes", []))
    return [
        f"<h2>Robustness — {html.escape(data['model'])}</h2>",
        table_html(rows, cols),
        "<p>chatgpt: the published figure on the same file (ASR for AdvGLUE, macro-F1 x100 out of "
        "distribution; Wang et al. 2023).</p>",
        f"<ul>{notes}</ul>" if notes else "",
    ]


def _profile_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The devices the run simulated, in the units people quote them in."""
    return [
        {
            "device": d["device_id"],
            "tier": d["tier"],
            "compute": f"{d['flops_per_s'] / 1e9:,.0f} GFLOP/s",
            "memory": f"{d['memory_bytes'] / 2**30:.1f} GiB",
            "uplink": f"{d['uplink_bps'] * 8 / 1e6:.3g} Mbit/s",
            "downlink": f"{d['downlink_bps'] * 8 / 1e6:.3g} Mbit/s",
            "latency": f"{d['latency_s'] * 1e3:.3g} ms",
            "price": f"${d['cost_per_hour']:.3g}/h",
        }
        for d in run["summary"].get("devices", [])
    ]


def _client_panel(run: dict[str, Any], plot_dir: Path, tag: str) -> list[str]:
    """Each client's own metric at the last evaluation, and its label mix."""
    parts = []
    local = "log_ppl" if task_of(run) == "lm" else "acc"
    last = max((e["round"] for e in run["evals"]), default=None)
    values = {e["client"]: e[local] for e in run["evals"] if e["round"] == last and local in e and e["client"] >= 0}
    tiers = {c["client"]: c["tier"] for c in run["clients"]}
    if values:
        label = "log-perplexity" if local == "log_ppl" else "accuracy"
        parts.append(img_tag(plots.client_metric(values, tiers, plot_dir / f"client_{local}{tag}.png", label)))
    mix = run["summary"].get("label_mix")
    if mix and mix.get("clients"):
        parts.append(img_tag(plots.label_mix(mix["clients"], mix["labels"], plot_dir / f"label_mix{tag}.png")))
    return parts


DEVICE_COLUMNS = ["device", "tier", "rounds", "num_examples", "flops", "bytes_up", "bytes_down", "seconds", "joules",
                  "dollars"]  # fmt: skip


def write_report(run_dirs: list[Path], out: Path, sections: list[str] | None = None) -> Path:
    """One self-contained HTML page (PNG plots inlined) for one run or a comparison of several:
    a run keeps its colour in every figure; a comparison adds the config keys that differ and,
    for runs that differ only by seed, mean ± std."""
    runs = [read_run(d) for d in run_dirs]
    for k, run in enumerate(runs):
        if not run["summary"]:
            run["summary"] = build_summary(run)
        run["color"] = plots.colour(k)
        run["label"] = run["name"] if [r["name"] for r in runs].count(run["name"]) == 1 else f"{run['name']} ({k + 1})"
    out = Path(out)
    single = len(runs) == 1
    plot_dir = out.parent / "plots" if single else out.parent / (out.stem + "_plots")
    plot_dir.mkdir(parents=True, exist_ok=True)
    metric, client_metric = headline(runs[0])
    figs = [
        plots.metric_per_round(runs, plot_dir / f"{metric}_per_round.png", metric, client_metric),
        plots.metric_per_second(runs, plot_dir / f"{metric}_per_second.png", metric),
        plots.loss_per_round(runs, plot_dir / "loss_per_round.png"),
        plots.bytes_per_round(runs, plot_dir / "bytes_per_round.png"),
    ]
    tasks = list(dict.fromkeys(task_of(r) for r in runs))
    figures = [c for t in tasks for c in FIGURES[t]]
    summary_columns = [c for col in SUMMARY_COLUMNS for c in (figures if col == "FIGURES" else [col])]
    title = runs[0]["name"] if single else f"Comparison of {len(runs)} runs"
    rows = [{**r["summary"], "name": r["label"]} for r in runs]
    parts = [f"<h1>edgefm — {html.escape(title)}</h1>", "<h2>Summary</h2>", table_html(rows, summary_columns)]
    if not single:
        swatches = "".join(
            f"<span class='swatch' style='background:{hex_colour(r['color'])}'></span>{html.escape(r['label'])}&emsp;"
            for r in runs
        )
        parts.append(f"<p>Colours in every figure: {swatches}</p>")
        diff = config_diff(runs)
        parts += ["<h2>What differs between the runs' configs</h2>"]
        parts += [
            table_html(diff, ["key", *[r["label"] for r in runs]]) if diff else "<p>Nothing: the same config.</p>"
        ]
        groups = seed_groups(runs, figures)
        if groups:
            parts += ["<h2>Over seeds (runs that differ only by seed): mean ± std</h2>",
                      table_html(groups, ["runs", "seeds", *figures])]  # fmt: skip
    parts.append("<h2>Learning and traffic</h2>")
    parts += [img_tag(f) for f in figs if f is not None]
    for k, run in enumerate(runs):
        tag = "" if single else f"_{k}"
        if run["clients"]:
            fig = plots.device_costs(run, plot_dir / f"device_costs{tag}.png")
            parts += [f"<h2>Devices — {html.escape(run['label'])}</h2>", img_tag(fig)]
            parts += _client_panel(run, plot_dir, tag)
            parts.append(table_html(_device_rows(run), DEVICE_COLUMNS))
            profiles = _profile_rows(run)
            if profiles:
                parts += ["<h3>Device profiles</h3>", table_html(profiles, list(profiles[0]))]
        if task_of(run) == "lm":
            parts += domain_section(run)
        round_columns = [
            c for col in ROUND_COLUMNS for c in (ROUND_FIGURES[task_of(run)] if col == "FIGURES" else [col])
        ]
        parts += [f"<h2>Rounds — {html.escape(run['label'])}</h2>", table_html(run["rounds"], round_columns)]
        if single and run["config"]:
            parts += ["<h2>Config</h2>", f"<pre>{html.escape(yaml.safe_dump(run['config'], sort_keys=False))}</pre>"]
    for run in runs:
        parts += robustness_section(run["dir"])
    parts += sections or []
    return write_page(out, title, parts)


def write_page(path: Path, title: str, parts: list[str]) -> Path:
    """A self-contained page (the report's style) holding ``parts``, written to ``path``."""
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width'><style>{CSS}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    return path


def hex_colour(rgb: tuple) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb[:3])
