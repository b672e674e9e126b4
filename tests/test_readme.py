"""The README is the home page notebook, and its two commands are the ones CI and the scripts run."""
import importlib.util, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "scripts" / "sync_readme.py")
sync_readme = importlib.util.module_from_spec(spec); spec.loader.exec_module(sync_readme)


def clone_commands(text: str) -> list[str]:
    "The commands of the 'From a clone' block."
    block = re.search(r"## From a clone.*?```sh\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_readme_is_generated_from_the_index_notebook():
    assert (ROOT / "README.md").read_text() == sync_readme.render(), "run: python scripts/sync_readme.py"


def test_exactly_two_commands_after_cloning_and_they_exist():
    cmds = clone_commands((ROOT / "README.md").read_text())
    assert cmds == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]
    for c in cmds: assert (ROOT / c.split()[1]).exists()
    assert clone_commands(sync_readme.render()) == cmds


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
    quick = (ROOT / "scripts" / "quickstart.sh").read_text()
    assert "scripts/install.sh" in quick and "--config quickstart" in quick
    assert "scripts/install.sh" in (ROOT / "scripts" / "test.sh").read_text()


def test_every_chapter_opens_with_a_colab_badge_and_install_cell():
    import json
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        head = "".join("".join(c["source"]) for c in cells[:4])
        opens = "rpo_from_scratch.ipynb" if nb.name == "index.ipynb" else nb.name   # the home page's badge: the learn route
        assert f"colab.research.google.com/github/rpo-nb/rpo_nb/blob/main/nbs/{opens}" in head, nb.name
        assert '"google.colab" in sys.modules' in head, nb.name
        assert "/work/" not in "".join("".join(c["source"]) for c in cells), f"{nb.name} uses a path of this machine"
