"""The docs pages as a reader will see them: nbdev's docs processing (what `nbdev_docs` runs before Quarto) passes on
every notebook, and each processed page, opened in headless Chromium (Debian's chromium and chromium-driver; .ci/run
installs them), loads its images, shows no error, no directive and no hidden cell, and links to the next page on its
route; a screenshot of each is kept in _docs_preview/."""
import importlib.util, json, shutil
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("docs_check", ROOT / "scripts" / "docs_check.py")
dc = importlib.util.module_from_spec(spec); spec.loader.exec_module(dc)


def test_docs_processing_passes_and_every_page_shows_what_the_site_will():
    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
    pages = dc.render(dc.process())
    report = dc.check(pages)
    notebooks = sorted((ROOT / "nbs").glob("*.ipynb"))
    assert sorted(report) == sorted([nb.stem + ".html" for nb in notebooks] + ["benchmarks.html"])
    assert dc.problems(report) == {}
    for nb in notebooks:
        st, cells = report[nb.stem + ".html"], json.loads(nb.read_text())["cells"]
        assert st["images"] >= 1 and (ROOT / "_docs_preview" / (nb.stem + ".png")).stat().st_size > 10_000, nb.name
        figures = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
        assert st["images"] >= 1 + figures, f"{nb.name}: the page shows {st['images']} images for {figures} stored figures"
        title = next("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("# "))
        assert st["title"] == title.splitlines()[0][2:].strip(), nb.name
        for c in cells:   # a hidden cell's code is not on the page
            src = "".join(c["source"])
            if c["cell_type"] == "code" and src.startswith("#| hide"):
                code = [l.strip() for l in src.splitlines()[1:] if len(l.strip()) > 25 and not l.startswith("#")]
                assert not code or code[0] not in st["text"], f"{nb.name} shows a hidden cell: {code[0]}"
    home = report["index.html"]["text"]
    assert "Start here" in home and "google.colab" not in home
