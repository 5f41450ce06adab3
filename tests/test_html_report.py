"""HTML reports (`tony report BUILD --html`, SWEEP/report.html): every plot and table is on the page,
names from the model are escaped, no script and nothing fetched; in a real headless browser the
plots render with a size."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import onnx
import pytest

pytest.importorskip("matplotlib")

EVIL = '<script>alert("x")</script>&amp;</svg>$\\alpha$'


class Page(HTMLParser):
    """What a browser would build: element counts, the text inside <svg> and outside it, attributes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.svg_text: list[str] = []
        self.text: list[str] = []
        self.refs: list[str] = []
        self.depth = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.depth += tag == "svg"
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v and not v.startswith("#")]

    def handle_endtag(self, tag):
        self.depth -= tag == "svg"

    def handle_data(self, data):
        (self.svg_text if self.depth else self.text).append(data)


def _evil_model(src, dst):
    m = onnx.load(src)
    m.graph.name = EVIL
    for i, n in enumerate(m.graph.node):
        n.name = f"{EVIL}{i}"
    onnx.save(m, dst)
    return dst


@pytest.fixture(scope="module")
def evil_build(digits_mlp, tmp_path_factory):
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model

    d = tmp_path_factory.mktemp("html")
    compile_model(_evil_model(digits_mlp / "model.onnx", d / "evil.onnx"), d / "build", config=AccelConfig(4, 4),
                  samples=1)
    return d / "build"


def _check_page(html: str, svgs: int, tables: int) -> Page:
    p = Page(html)
    assert p.tags.get("svg") == svgs and p.tags.get("table") == tables, p.tags
    assert "script" not in p.tags and "iframe" not in p.tags and "object" not in p.tags
    assert not p.refs, p.refs  # self-contained: nothing to fetch
    assert "<script" not in html.lower()
    return p


def test_build_page_has_every_plot_and_table_and_escapes_names(evil_build, tony_cli):
    r = tony_cli("report", evil_build, "--html")
    assert r.returncode == 0, r.stderr
    html = (evil_build / "report.html").read_text()
    p = _check_page(html, svgs=3, tables=2)  # cycles, utilization, traffic; layers, traffic
    m = json.loads((evil_build / "manifest.json").read_text())
    text, svg = "".join(p.text), "".join(p.svg_text)
    assert EVIL in text  # the name is shown as itself ...
    layers = [l["name"] for l in m["layers"] if l["name"] not in ("(load)", "(store)")]
    assert layers and all(name.startswith(EVIL) for name in layers)
    for name in layers:
        assert name in text and name in svg, name  # ... in the tables and the plots, drawn literally
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert f"{m['predicted_cycles']:,} cycles" in text
    for label in ("cycles per run", "% of the array's peak", "bytes moved over the memory port per run"):
        assert label in svg


def test_partitioned_build_page_has_every_segments_layers_and_their_summed_traffic(tmp_path, tony_cli):
    """A build partitioned into device segments (seg<k>/, host ops between them; here a
    squeeze-excite block whose gate Mul stays on the host) gets a page too: the MAC layers of
    every segment, and the memory traffic of one run as the sum over the segments' own programs;
    nothing on stderr for names in a script matplotlib's fonts lack."""
    import numpy as np

    from test_partition import _se_block
    from tony.accel import traffic
    from tony.build import Build
    from tony.quant.qdq import quantize_static

    x = np.random.default_rng(3).standard_normal((4, 16, 8, 8)).astype(np.float32)
    q = quantize_static(_se_block(), x, sequential=False)
    for n in q.graph.node:
        n.name += "\u540d"   # drawn by the browser; matplotlib's fonts lack it, and say nothing
    onnx.save(q, tmp_path / "se.onnx")
    r = tony_cli("compile", tmp_path / "se.onnx", "-o", tmp_path / "b", "--array", "3x5", "--samples", "1")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    device = [s for s in m["segments"] if s["kind"] == "device"]
    assert len(device) >= 2
    r = tony_cli("report", tmp_path / "b", "--html")
    assert r.returncode == 0 and not r.stderr, r.stderr
    html = (tmp_path / "b" / "report.html").read_text()
    p = _check_page(html, svgs=3, tables=2)
    text = "".join(p.text)
    for s in device:
        for layer in s["layers"]:
            assert layer["name"] in text, layer["name"]
    segs = [Build.open(tmp_path / "b" / s["build"]) for s in device]
    total = sum(traffic.of_manifest(b.manifest, b.load_npy("mem/image.npy"))["total"]["total"] for b in segs)
    assert f"{total:,} bytes per run" in text


def test_report_refuses_a_folder_that_is_not_a_build(tmp_path, tony_cli):
    r = tony_cli("report", tmp_path, "--html")
    assert r.returncode == 1 and "not a Tony build" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def evil_sweep(digits_mlp, tmp_path_factory):
    pytest.importorskip("distributed")
    from tony.sweep import Settings, run_sweep

    d = tmp_path_factory.mktemp("sweep_html")
    label = '<b onmouseover="x">m&$y$'
    model = d / f"{label}.onnx"
    shutil.copy(digits_mlp / "model.onnx", model)
    run_sweep([str(model)], d / "sweep", arrays=[(2, 2), (4, 4), (8, 8)],
              settings=Settings(serial=True, progress=False))
    return d / "sweep", label


def test_sweep_page_has_the_front_and_the_table(evil_sweep):
    out, label = evil_sweep
    html = (out / "report.html").read_text()
    p = _check_page(html, svgs=2, tables=3)  # per model, overall; front, configurations, all points
    assert label in "".join(p.text) and label in "".join(p.svg_text)
    assert '<b onmouseover' not in html and "&lt;b onmouseover" in html
    assert "Pareto front" in "".join(p.svg_text)


# ---- in a real browser ------------------------------------------------------------------------------

def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium, chromium-browser or google-chrome on PATH (optional: apt-get install chromium)")


MEASURE = ("<script>document.body.setAttribute('data-svg', JSON.stringify(Array.from("
           "document.querySelectorAll('figure svg')).map(function(s){var r=s.getBoundingClientRect();"
           "return [r.width, r.height, s.querySelectorAll('text').length];})));</script>")


def _browse(page, tmp_path, *args):
    exe = _chromium()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("which", ["build", "sweep"])
def test_pages_render_in_a_headless_browser(which, evil_build, evil_sweep, tmp_path, tony_cli):
    if which == "build":
        assert tony_cli("report", evil_build, "--html").returncode == 0
        src, n = evil_build / "report.html", 3
    else:
        src, n = evil_sweep[0] / "report.html", 2
    # a copy with a probe that records each plot's laid-out size (the report itself has no script)
    probe = tmp_path / "probe.html"
    probe.write_text(src.read_text().replace("</body>", MEASURE + "</body>"))
    dom = _browse(probe, tmp_path, "--dump-dom")
    sizes = json.loads(re.search(r'data-svg="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(sizes) == n
    for w, h, texts in sizes:
        assert w > 200 and h > 100 and texts > 5, sizes
    shot = tmp_path / "shot.png"
    _browse(src, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars")
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 1600 and img.shape[1] >= 1200
    ink = (img[..., :3] < 0.9).any(axis=-1).mean()
    colour = ((img[..., 0] > 0.8) & (img[..., 1] < 0.45) & (img[..., 2] < 0.45)).sum()  # red front / bound marks
    assert ink > 0.02 and colour > 20, (ink, colour)
