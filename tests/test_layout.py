"""The flow is the layout: chapters in the order data moves, one module each, every module importing only modules of
earlier chapters; the sidebar, the README's chapter table and each chapter's flow line list them in that order."""
import importlib.util, json, re
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("chapter_stats", ROOT / "scripts" / "chapter_stats.py")
chapter_stats = importlib.util.module_from_spec(spec); spec.loader.exec_module(chapter_stats)
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("[0-9][0-9]_*.ipynb"))


def cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]


def module_of(nb: Path) -> str | None:
    return next((m.group(1) for s in cells(nb) if (m := re.search(r"^#\| default_exp (\w+)", s, re.M))), None)


CHAPTERS = [(nb, module_of(nb)) for nb in NOTEBOOKS]
MODULES = [m for _, m in CHAPTERS if m]


def package_imports(module: str) -> set[str]:
    "The rpo_nb modules `module` imports, itself excluded (a module may read its own installed source)."
    return chapter_stats.package_imports((ROOT / "rpo_nb" / f"{module}.py").read_text()) - {module}


def test_every_module_has_one_chapter_and_every_exported_module_is_a_chapter():
    assert len(MODULES) == len(set(MODULES))
    shipped = {p.stem for p in (ROOT / "rpo_nb").glob("*.py") if not p.name.startswith("_")}
    assert shipped == set(MODULES), f"modules without a chapter: {shipped - set(MODULES)}; chapters without a module: {set(MODULES) - shipped}"


def test_modules_import_only_earlier_chapters():
    for k, m in enumerate(MODULES):
        later = package_imports(m) - set(MODULES[:k])
        assert not later, f"rpo_nb.{m} (chapter {k}) imports {sorted(later)}, which come after it in the flow"


def test_the_sidebar_lists_every_chapter_in_order():
    listed = re.findall(r"- (\d\d_\w+\.ipynb)", (ROOT / "nbs" / "sidebar.yml").read_text())
    assert listed == [nb.name for nb in NOTEBOOKS]


def test_the_readme_chapter_table_lists_every_chapter_with_its_module():
    index = "\n".join(cells(ROOT / "nbs" / "index.ipynb"))
    rows = re.findall(r"^\| \[(\d\d) [^]]+\]\((\d\d_\w+\.ipynb)\) \| (?:`rpo_nb\.(\w+)`)? *\|", index, re.M)
    assert [(f, m or None) for _, f, m in rows] == [(nb.name, m) for nb, m in CHAPTERS]
    assert all(n == f[:2] for n, f, _ in rows)


def test_each_module_chapter_opens_with_the_flow_in_order_and_its_place_in_bold():
    flow = " → ".join(MODULES)
    for k, (nb, m) in enumerate(c for c in CHAPTERS if c[1]):
        intro = next(s for s in cells(nb) if s.startswith("# "))
        line = next((l for l in intro.splitlines() if "→" in l), "")
        assert line.replace("**", "").count(flow) == 1, f"{nb.name}: its flow line is not {flow}"
        assert f"**{m}**" in line, f"{nb.name}: its flow line does not put {m} in bold"
        assert line.startswith(f"Chapter {nb.name[:2]}"), f"{nb.name}: its flow line does not start with its number"
