"""The report as a person sees it: rendered by headless Chromium at 1280 pixels, every image
loads, no table reaches past the page, nothing reads NaN; a screenshot stays in the test's
temp folder. ``make test`` installs Debian's chromium when it is missing."""

import json
import shutil
import subprocess

import pytest

from edgefm import api
from edgefm.report import units
from edgefm.report.html import write_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine's closed network refuses Chromium's own calls
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const boxes = [...document.querySelectorAll('table')].map(t => (t.closest('.scroll') || t).getBoundingClientRect());
  const out = {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    tables: boxes.length,
    widest: Math.max(0, ...boxes.map(b => b.right)),
    page: document.documentElement.scrollWidth,
    nan: /\\b(NaN|nan|inf|Infinity|undefined)\\b/.test(document.body.innerText),
  };
  const pre = document.createElement('pre');
  pre.id = 'edgefm-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
TINY = ["model.name=tiny_bert", "data.max_train=120", "data.max_test=40", "data.max_length=24", "clients=4", "rounds=2"]


def _render(page, tmp_path, name: str) -> dict:
    """Chromium's view of ``page``: the checks above, and a screenshot NAME.png in tmp_path."""
    probe = tmp_path / f"{name}-probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    profile = ["--user-data-dir=" + str(tmp_path / "chrome-profile"), "--window-size=1280,2000"]
    common = [BROWSER, *FLAGS, *profile, "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    shot = tmp_path / f"{name}.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000  # a page was drawn
    start = dom.stdout.index('<pre id="edgefm-check">') + len('<pre id="edgefm-check">')
    return json.loads(dom.stdout[start : dom.stdout.index("</pre>", start)])


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no chromium: `make test` installs Debian's chromium")
def test_reports_render_whole_in_a_browser(tmp_path):
    runs = [api.train(None, [*TINY, f"seed={s}"], out=tmp_path / f"s{s}").dir for s in (0, 1)]
    runs.append(api.train(None, [*TINY, "algorithm.name=fedprox"], out=tmp_path / "prox").dir)
    compare = write_report(runs, tmp_path / "cmp" / "compare.html")
    html = compare.read_text()
    assert "What differs between the runs' configs" in html and "algorithm.name" in html
    assert "mean ± std" in html and "s0, s1" in html  # the two seeds grouped, the FedProx run apart
    for name, page in (("report", runs[0] / "report.html"), ("compare", compare)):
        seen = _render(page, tmp_path, name)
        assert seen["images"] >= 6 and seen["broken"] == 0, seen
        assert seen["tables"] >= 4 and seen["widest"] <= 1280 and seen["page"] <= 1280, seen
        assert not seen["nan"], seen


def test_cells_read_in_human_units():
    assert units.cell("flops", 7.089e11) == "709 GFLOPs"
    assert units.cell("bytes_up", 42_590_216) == "42.6 MB"
    assert units.cell("upload_mb_per_client_round", 0.3) == "300 kB"
    assert units.cell("sim_seconds_per_round", 142.2) == "2.37 min"
    assert units.cell("joules", 1810.7) == "1.81 kJ" and units.cell("dollars", 0.004) == "$0.004"
    assert units.cell("accuracy", float("nan")) == "—" and units.cell("accuracy", None) == "—"
    assert units.cell("round", 3) == "3" and units.header("upload_mb_per_client_round") == "Upload / client / round"
    assert units.header("some_new_key") == "some new key"
