"""The notebooks are committed executed: every chapter shows what it computes (values, tables, figures), no stored
output is an error, and no stored output is older than the code it shows (scripts/execute_notebooks.py)."""
import ast, importlib.util, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
ex = importlib.util.module_from_spec(spec); spec.loader.exec_module(ex)
PLOTTING = ("heatmap", "training_curves(", "interval_bars(", "margin_histograms(", "plt.", "win_rate_bars(", "weight_heatmaps(")
SKIPPED_FLAGS = ("#| export", "#| exports", "#| hide") + ex.CI_SKIPS


def cells(nb: Path) -> list[dict]:
    return [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def shown(cell: dict) -> bool:
    "A cell the reader sees run in CI (no flags that hide or skip it)."
    src = "".join(cell["source"])
    return not any(f in src for f in SKIPPED_FLAGS) and "google.colab" not in src


def displays(src: str) -> bool:
    "Whether a cell prints or ends in an expression whose value a notebook shows."
    try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith(("%", "!", "#|"))))
    except SyntaxError: return False
    if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print" for n in ast.walk(tree)): return True
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr): return False
    call = last.value.func if isinstance(last.value, ast.Call) else None
    name = getattr(call, "id", None) or getattr(call, "attr", None) or ""
    return not (name.startswith("test_") or name in ("show_doc", "shutdown", "close", "savefig", "update", "append"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_as_fresh_as_the_code(nb):
    record = json.loads((ROOT / "nbs" / "_executed.json").read_text())
    assert nb.name in record, f"{nb.name} was never executed: python scripts/execute_notebooks.py {nb.stem}"
    r = record[nb.name]
    assert r["code"] == ex.code_hash(json.loads(nb.read_text())), f"{nb.name}: cells changed since its outputs were made; re-execute it"
    assert r["modules"] == ex.module_hash(), f"{nb.name}: rpo_nb changed since its outputs were made; re-execute the notebooks"
    assert r["version"] == ex.package_version()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_output_is_an_error(nb):
    for k, c in enumerate(cells(nb)):
        for o in c.get("outputs", []):
            assert o["output_type"] != "error", f"{nb.name} code cell {k}: {o.get('ename')}: {o.get('evalue')}"
            text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
            assert "Traceback (most recent call last)" not in text, f"{nb.name} code cell {k} shows a traceback"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_output_is_a_warning(nb):
    "A reader sees what a cell shows on purpose: no warning text, which also names the machine's temporary kernel files."
    for k, c in enumerate(cells(nb)):
        for o in c.get("outputs", []):
            text = "".join(o.get("text", ""))
            assert not (o.get("name") == "stderr" and "Warning" in text), f"{nb.name} code cell {k} stores a warning: {text[:200]}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_that_shows_something_kept_it(nb):
    visible = [c for c in cells(nb) if shown(c)]
    missing = [k for k, c in enumerate(visible) if displays("".join(c["source"])) and not c.get("outputs")]
    assert not missing, f"{nb.name}: visible cells {missing} print or show a value but hold no output"
    if any(p in "".join(c["source"]) for c in visible for p in PLOTTING):
        images = [o for c in visible for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{nb.name} draws figures but stores none"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_output_is_noise(nb):
    "No loading or conversion bar and no offline-only notice in what a page shows (execute_notebooks strips them)."
    for k, c in enumerate(cells(nb)):
        for o in c.get("outputs", []):
            data = o.get("data", {})
            text = "".join(o.get("text", "")) + "".join(data.get("text/plain", ""))
            assert "application/vnd.jupyter.widget-view+json" not in data, f"{nb.name} code cell {k} stores a widget (a progress bar)"
            assert not ex.NOISE.search(text), f"{nb.name} code cell {k} stores noise: {ex.NOISE.search(text).group(0)[:120]}"


# words that should not appear on a project page (HH's red-team half is full of them): slurs, profanity, sexual and
# self-harm terms. Matched as whole words, case-insensitive, in prose, code and stored outputs.
UNSHOWABLE = re.compile(r"\b(?:fuck\w*|shit\w*|bitch\w*|cunt\w*|dick|dicks|cock|pussy|penis|vagina\w*|rap(?:e|ed|ist)|slut\w*|whore\w*"
                        r"|nigg\w*|fag\w*|retard\w*|kike\w*|chink\w*|spic|tranny|porn\w*|suicid\w*|molest\w*|incest\w*|genocid\w*"
                        r"|nazi\w*|kill (?:them|him|her|you|someone|people)|poison (?:someone|him|her|them))\b", re.I)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_page_shows_offensive_text(nb):
    "Displayed samples come from a vetted harmless subset of prompts: every cell and stored output checked against a word list."
    for k, c in enumerate(json.loads(nb.read_text())["cells"]):
        texts = ["".join(c["source"])] + ["".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                                           + "".join(o.get("data", {}).get("text/markdown", "")) for o in c.get("outputs", [])]
        for t in texts:
            m = UNSHOWABLE.search(t)
            assert not m, f"{nb.name} cell {k} shows {m.group(0)!r}: {t[max(0, m.start() - 80):m.end() + 80]!r}"
