"""The flow is the layout: chapters in the order data moves, one module each, every module importing only modules of
earlier chapters, and each chapter's flow line lists them in that order. The sidebar and the README's chapter table
group the chapters by route (learn, run, reference, results), and each chapter opens with its route."""
import importlib.util, json, re
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("chapter_stats", ROOT / "scripts" / "chapter_stats.py")
chapter_stats = importlib.util.module_from_spec(spec); spec.loader.exec_module(chapter_stats)
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("[0-9][0-9]_*.ipynb"))


def cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]


def opening(nb: Path) -> str:
    "The chapter's title cell and the markdown cell after it: what a reader reads first."
    cs = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown"]
    k = next(i for i, c in enumerate(cs) if "".join(c["source"]).startswith("# "))
    return "\n".join("".join(c["source"]) for c in cs[k:k + 2])


def test_title_cells_hold_only_the_title_and_summary():
    "nbdev's docs processing turns the title cell into the page's front matter and drops the rest of that cell."
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        title = next(s for s in cells(nb) if s.startswith("# "))
        lines = [l for l in title.splitlines() if l.strip()]
        assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("> ")), f"{nb.name}: its title cell holds more than '# title' and '> summary'"


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


ROUTES = ["Learn RPO", "Run it", "Engineering reference", "Results"]


def sidebar_sections() -> dict[str, list[str]]:
    "The sidebar's sections and their pages, in order."
    import yaml
    contents = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    return {s["section"]: s["contents"] for s in contents if isinstance(s, dict)}


def test_the_sidebar_lists_every_chapter_once_by_route():
    sections = sidebar_sections()
    assert list(sections) == ROUTES
    listed = [p for pages in sections.values() for p in pages]
    every = sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb") if p.name != "index.ipynb") + ["benchmarks.md"]
    assert sorted(listed) == sorted(every) and len(listed) == len(set(listed))
    assert sections["Learn RPO"][0] == "rpo_from_scratch.ipynb"
    reference = sections["Engineering reference"]
    assert reference == sorted(reference), "the reference lists its chapters in the order data flows"


def test_the_readme_chapter_table_lists_every_chapter_by_route():
    index = "\n".join(cells(ROOT / "nbs" / "index.ipynb"))
    table = index[index.index("## The chapters"):]
    groups = re.split(r"^### ", table, flags=re.M)[1:]
    assert [g.splitlines()[0] for g in groups] == ROUTES
    modules = dict((nb.name, m) for nb, m in CHAPTERS)
    for g, (route, pages) in zip(groups, sidebar_sections().items()):
        rows = re.findall(r"^\| \[(?:(\d\d) )?[^]]+\]\((\w+\.ipynb)\) \| (?:`rpo_nb\.(\w+)`)? *\|", g, re.M)
        assert [f for _, f, _ in rows] == [p for p in pages if p.endswith(".ipynb")], route
        for n, f, m in rows:
            assert (m or None) == modules.get(f) and (not n or n == f[:2]), (route, f)


def test_each_chapter_opens_with_its_route_and_the_next_page_on_it():
    for route, pages in sidebar_sections().items():
        nbs = [p for p in pages if p.endswith(".ipynb")]
        for k, name in enumerate(nbs):
            intro = opening(ROOT / "nbs" / name)
            line = next((l for l in intro.splitlines() if "**Route:**" in l), "")
            assert route in line, f"{name}: its opening has no route line naming {route!r}"
            if route in ("Learn RPO", "Run it"):
                assert f"{k + 1} of {len(nbs)}" in line, f"{name}: its route line does not say {k + 1} of {len(nbs)}"
                nxt = nbs[k + 1] if k + 1 < len(nbs) else {"Learn RPO": "21_tutorial.ipynb", "Run it": "22_study.ipynb"}[route]
                assert f"({nxt}" in intro, f"{name}: its opening does not link to the next page on its route, {nxt}"


def test_each_module_chapter_opens_with_the_flow_in_order_and_its_place_in_bold():
    flow = " → ".join(MODULES)
    for k, (nb, m) in enumerate(c for c in CHAPTERS if c[1]):
        intro = opening(nb)
        line = next((l for l in intro.splitlines() if "→" in l and l.startswith("Chapter")), "")
        assert line.replace("**", "").count(flow) == 1, f"{nb.name}: its flow line is not {flow}"
        assert f"**{m}**" in line, f"{nb.name}: its flow line does not put {m} in bold"
        assert line.startswith(f"Chapter {nb.name[:2]}"), f"{nb.name}: its flow line does not start with its number"
