"""The rendered pages as a reader sees them: every page opened in headless Chromium (Debian's chromium and
chromium-driver; .ci/run installs them), every image loaded, no error output, a screenshot kept in _docs_preview/."""
import importlib.util, json, shutil
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("docs_check", ROOT / "scripts" / "docs_check.py")
dc = importlib.util.module_from_spec(spec); spec.loader.exec_module(dc)


def test_every_page_loads_its_images_and_shows_no_error():
    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
    pages = dc.render()
    report = dc.check(pages)
    assert sorted(report) == sorted(p.name for p in pages) and len(pages) == len(list((ROOT / "nbs").glob("*.ipynb")))
    for name, st in report.items():
        assert st["images"] >= 1 and st["images"] == st["in_source"] and st["loaded"] == st["images"], (name, st)
        assert st["errors"] == 0 and not st["traceback"], name
        shot = dc.OUT / name.replace(".html", ".png")
        assert shot.exists() and shot.stat().st_size > 10_000, name
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):   # a page shows every figure its notebook stores
        figures = sum("image/png" in o.get("data", {}) for c in json.loads(nb.read_text())["cells"] for o in c.get("outputs", []))
        assert report[nb.stem + ".html"]["images"] >= 1 + figures, nb.name
