"""How the book reads: per chapter, its cells, exported-cell sizes, tests right after exports and reading time; per
module, its longest function and what it imports from the package. The working tree, or any commit (issue #21's table).

    python scripts/chapter_stats.py            # the working tree
    python scripts/chapter_stats.py 3499c02    # the same figures at a commit, read with git show

Reading time: prose at 230 words a minute, code at 12 lines a minute (the code cells a reader sees, without flag and
blank lines). A test is a code cell that calls test_eq / test_close / test_fail / test_ne or asserts; an exported
cell counts as tested when such a cell comes before the next exported cell. A chapter's first exported cell (its
imports) is not counted as an export. Modules are ordered as their chapters.
"""
import ast, json, re, statistics, subprocess, sys
import yaml
from pathlib import Path

ROOT = Path(__file__).parents[1]
TEST = re.compile(r"\btest_(eq|close|fail|ne)\(|^\s*assert\b", re.M)
EXPORT = re.compile(r"^#\| exports?\b", re.M)
sys.path.insert(0, str(ROOT / "scripts"))
from execute_notebooks import NOISE   # what the executed notebooks must not store: one definition


def read(path: str, ref: str | None) -> str:
    if ref is None: return (ROOT / path).read_text()
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True).stdout


def listing(folder: str, suffix: str, ref: str | None) -> list[str]:
    if ref is None: return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).glob(f"*{suffix}"))
    out = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", ref, f"{folder}/"], capture_output=True,
                         text=True, check=True).stdout.split()
    return sorted(p for p in out if p.endswith(suffix))


def code_lines(src: str) -> int:
    return sum(1 for l in src.splitlines() if l.strip() and not l.startswith("#|"))


def chapter(nb: dict) -> dict:
    "A notebook's cells, exported-cell sizes, tested exports, longest run of exported lines with no test, reading minutes."
    cells = [("".join(c["source"]), c["cell_type"]) for c in nb["cells"]]
    words = sum(len(s.split()) for s, t in cells if t == "markdown")
    seen = [s for s, t in cells if t == "code" and not s.startswith("#| hide") and "google.colab" not in s]
    exports = [s for s, t in cells if t == "code" and EXPORT.search(s)]
    sizes = [code_lines(s) for s in exports[1:]] or [0]   # the first exported cell is the chapter's imports
    tested, pending, run, longest = 0, False, 0, 0
    for s, t in cells:
        if t != "code" or (exports and s is exports[0]): continue   # the chapter's imports: nothing to test
        if EXPORT.search(s):
            if pending: run += code_lines(s)
            else: pending, run = True, code_lines(s)
            longest = max(longest, run)
        elif pending and TEST.search(s): tested, pending, run = tested + 1, False, 0
    # a first reading stops at the first "## Reference" section (the book's marker for plumbing a reader may skip)
    ref_at = next((i for i, (src, t) in enumerate(cells) if t == "markdown" and re.match(r"##+ Reference", src)), len(cells))
    first = cells[:ref_at]
    first_minutes = sum(len(s.split()) for s, t in first if t == "markdown") / 230 + \
        sum(code_lines(s) for s, t in first if t == "code" and not s.startswith("#| hide") and "google.colab" not in s) / 12
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    noise = sum(bool(NOISE.search("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))))
                or "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    return {"first_minutes": first_minutes, "noise": noise, "figures": sum("image/png" in o.get("data", {}) for o in outputs),
            "sizes": sizes if exports[1:] else [],
            "cells": len(cells), "exports": max(len(exports) - 1, 0), "median": statistics.median(sizes), "largest": max(sizes),
            "tested": tested, "untested_run": longest, "minutes": words / 230 + sum(map(code_lines, seen)) / 12,
            "module": next((m.group(1) for s, _ in cells if (m := re.search(r"^#\| default_exp (\w+)", s, re.M))), None)}


def package_imports(src: str) -> set[str]:
    "The rpo_nb modules a module's source imports, at its top or inside a function, in any of Python's spellings."
    out = set()
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.Import): out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("rpo_nb.")}
        elif isinstance(n, ast.ImportFrom):
            if n.module and (n.level == 1 or n.module.startswith("rpo_nb.")): out.add(n.module.split(".")[0 if n.level else 1])
            elif (n.level == 1 and not n.module) or (not n.level and n.module == "rpo_nb"): out |= {a.name for a in n.names}
    return out


def module(src: str) -> dict:
    "A module's lines, its longest function, and the package modules it imports."
    funcs = [(n.end_lineno - n.lineno + 1, n.name) for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return {"lines": len(src.splitlines()), "longest": max(funcs, default=(0, "")), "imports": sorted(package_imports(src))}


def main(ref: str | None):
    print(f"## {'working tree' if ref is None else ref}\n")
    print("| chapter | cells | exported cells | lines per export: median / largest | exports tested before the next |"
          " longest untested run of exported lines | reading minutes |\n|---|---|---|---|---|---|---|")
    total, order, stats = 0.0, [], {}
    for path in listing("nbs", ".ipynb", ref):
        c = stats[Path(path).stem] = chapter(json.loads(read(path, ref)))
        total += c["minutes"]
        if c["module"]: order.append(c["module"])
        print(f"| {Path(path).stem} | {c['cells']} | {c['exports']} | {c['median']:.0f} / {c['largest']} | {c['tested']} of "
              f"{c['exports']} | {c['untested_run']} | {c['minutes']:.0f} |")
    print(f"\nthe book: {total:.0f} minutes ({total / 60:.1f} h)")
    sizes = [x for c in stats.values() for x in c["sizes"]]
    print(f"exported cells: {len(sizes)}, median {statistics.median(sizes):.0f} lines, {sum(x > 40 for x in sizes)} over 40; "
          f"stored noise outputs: {sum(c['noise'] for c in stats.values())}; figures: {sum(c['figures'] for c in stats.values())} "
          f"({', '.join(k + ' ' + str(c['figures']) for k, c in stats.items() if c['figures'])})")
    try: side = yaml.safe_load(read("nbs/sidebar.yml", ref))["website"]["sidebar"]["contents"]
    except Exception: side = []
    for sec in (x for x in side if isinstance(x, dict) and x.get("section") in ("Learn RPO", "Run it")):
        nbs = [Path(p).stem for p in sec["contents"] if p.endswith(".ipynb") and Path(p).stem in stats]
        print(f"route {sec['section']}: {len(nbs)} chapters, {sum(stats[n]['first_minutes'] for n in nbs):.0f} minutes to the "
              f"reference sections ({sum(stats[n]['minutes'] for n in nbs):.0f} with them): " +
              ", ".join(f"{n} {stats[n]['first_minutes']:.0f}" for n in nbs))
    print()
    print("| module | lines | longest function | imports from the package |\n|---|---|---|---|")
    edges, backwards = 0, []
    for name in order:
        m = module(read(f"rpo_nb/{name}.py", ref))
        m["imports"] = [i for i in m["imports"] if i != name]   # a module reading its own installed source
        edges += len(m["imports"])
        backwards += [f"{name} -> {i}" for i in m["imports"] if i in order and order.index(i) >= order.index(name)]
        print(f"| {name} | {m['lines']} | {m['longest'][1]} ({m['longest'][0]} lines) | {', '.join(m['imports']) or '-'} |")
    print(f"\n{edges} imports between modules; {len(backwards)} against the chapter order{': ' + ', '.join(backwards) if backwards else ''}")


if __name__ == "__main__": main(sys.argv[1] if len(sys.argv) > 1 else None)
