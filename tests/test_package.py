"""The package as a user gets it: a wheel that installs and carries its data, configs that load
without torch, and a module graph without import cycles."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "edgefm"


def run(*cmd: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_wheel_installs_and_runs_from_outside_the_checkout(tmp_path):
    # build from a copy, so the checkout gets no build/ or egg-info
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
        ".",
        cwd=project,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("edgefm-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "edgefm/market/data/minilm_sst2.json" in names and "edgefm/algorithms/configs.py" in names

    # a fresh venv with the wheel (not editable); its dependencies come from this venv's
    # site-packages, appended after its own, so the wheel's edgefm is the one imported
    fresh = tmp_path / "fresh"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(fresh), cwd=tmp_path).returncode == 0
    python = fresh / "bin" / "python"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        str(wheel),
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    fresh_site = Path(
        run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip()
    )
    (fresh_site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(str(python), "-c", "import edgefm; print(edgefm.__file__)", cwd=elsewhere, env=env)
    assert where.stdout.strip().startswith(str(fresh)), where.stdout + where.stderr
    edgefm = str(fresh / "bin" / "edgefm")
    version = run(edgefm, "--version", cwd=elsewhere, env=env)
    assert version.returncode == 0 and "edgefm 0.1.0" in version.stdout, version.stderr
    market = run(
        edgefm,
        "market",
        "aeria",
        "--generate",
        "20",
        "--workload",
        "minilm_sst2",
        "--instance",
        "i.json",
        "--out",
        "o.json",
        cwd=elsewhere,
        env=env,
    )
    assert market.returncode == 0, market.stdout + market.stderr
    assert json.loads((elsewhere / "i.json").read_text())["workload"]["name"] == "minilm_sst2"
    outcome = json.loads((elsewhere / "o.json").read_text())
    assert outcome["revenue"] >= 0 and len(outcome["payments"]) == 20


def test_reading_a_config_imports_no_torch():
    code = (
        "import sys\n"
        "from edgefm import config, registry\n"
        "cfg = config.load('configs/fedms_sst2.yaml', ['algorithm.gate=fixed'])\n"
        "assert cfg.algorithm.gate == 'fixed' and len(registry.names('algorithm')) >= 6\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = run(sys.executable, "-c", code, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every edgefm module ``path`` imports, at any depth (function-level imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    # A package's PEP 562 ``__getattr__`` (edgefm.train -> edgefm.api) imports only on attribute
    # access, after the package has initialised: a facade, not a dependency of the package.
    lazy = {
        id(n)
        for f in tree.body
        if path.name == "__init__.py" and isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
        for n in ast.walk(f)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in modules and n != module}
    return found


def test_no_import_cycles_among_edgefm_modules():
    paths = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC.parent).with_suffix("").parts)
        paths[name.removesuffix(".__init__")] = p
    graph = {m: _imports(p, m, set(paths)) for m, p in paths.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n) :] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert graph["edgefm.registry"] <= {"edgefm"}  # the registry imports its providers by name, lazily
    # the graph is really read (a positive control), function-level imports included
    assert "edgefm.fl.aggregate" in graph["edgefm.algorithms.raffm"]
    assert "edgefm.fl.trained" in graph["edgefm.cli.runs"]  # imported inside the command
