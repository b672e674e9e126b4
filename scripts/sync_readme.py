"""Write README.md from nbs/index.ipynb (what nbdev_readme does, without Quarto). `--check` only compares."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "README text: markdown cells as they are, visible code cells as python blocks, notebook links into nbs/."
    cells = json.loads(nb_path.read_text())["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or re.search(r"^#\|\s*hide", src, re.M): continue
        if c["cell_type"] == "markdown":
            src = re.sub(r"\]\((\w+)\.(ipynb|md)\)", r"](nbs/\1.\2)", src)
            parts.append(src.replace("](images/", "](nbs/images/"))   # the docs' local images, seen from the repository root
        elif c["cell_type"] == "code":
            code = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
            parts.append(f"```python\n{code}\n```")
    return "<!-- generated from nbs/index.ipynb by scripts/sync_readme.py: edit the notebook, not this file -->\n\n" + \
        "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        sys.exit(0 if readme.read_text() == text else "README.md differs from nbs/index.ipynb: run python scripts/sync_readme.py")
    readme.write_text(text)
    print("wrote", readme)
