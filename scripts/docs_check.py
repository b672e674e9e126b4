"""The docs pages as a reader will see them, without Quarto. Three steps:

1. `process`: nbdev's docs processing (`nbdev_proc_nbs`, the step `nbdev_docs` runs before Quarto renders) on a copy
   of the project, with a stub `quarto` on PATH (without one, nbdev tries to install Quarto and then pip-installs the
   copy). It fails, naming the notebook and cell, when a cell it runs on its own (every cell that defines or imports
   something) fails: what breaks `nbdev_docs` for everyone.
2. `render`: each processed notebook to HTML in _docs_preview/: front matter as title and summary, directives applied
   (`echo: false` hides a cell's code, `output: asis` renders its markdown, hidden cells are already gone), no
   prompts, and the sidebar's routes as navigation, with a link to the next page on the page's route.
3. `check`: each page opened in headless Chromium: images loaded, no error output, no directive or hidden cell shown,
   the link to the next page; a full-page screenshot beside each page.

    python scripts/docs_check.py            # needs Debian's chromium and chromium-driver (apt-get install ...)

Exits non-zero, naming the page, on any problem.
"""
import base64, html, json, os, re, shutil, subprocess, sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
OUT = ROOT / "_docs_preview"
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


def routes() -> dict[str, list[str]]:
    "The sidebar's sections and their pages, in order (nbs/sidebar.yml)."
    contents = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    return {s["section"]: s["contents"] for s in contents if isinstance(s, dict)}


def next_pages() -> dict[str, str]:
    "Each page's next page on its route; a route's last page leads to the next route's first."
    order = [p for pages in routes().values() for p in pages]
    return {"index.ipynb": order[0]} | {p: q for p, q in zip(order, order[1:])}


def process(out: Path = OUT) -> Path:
    "Run nbdev_proc_nbs on a copy of the project in `out`/project; the folder of processed notebooks."
    work = out / "project"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(ROOT / "settings.ini", work)
    shutil.copytree(ROOT / "nbs", work / "nbs")
    shutil.copytree(ROOT / "rpo_nb", work / "rpo_nb", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "bin").mkdir()
    (work / "bin" / "quarto").write_text("#!/bin/sh\nexit 0\n")   # nbdev only checks that Quarto is there
    (work / "bin" / "quarto").chmod(0o755)
    env = dict(os.environ, PATH=f"{work / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               MPLBACKEND="Agg", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    r = subprocess.run(["nbdev_proc_nbs", "--n_workers", "2"], cwd=work, env=env, capture_output=True, text=True)
    if r.returncode:
        failed = dict.fromkeys(re.findall(r"Error in notebook: (.+? in cell \d+)", r.stderr))
        raise RuntimeError(f"nbdev_proc_nbs failed in {'; '.join(failed) or 'see below'}:\n{r.stderr[-2000:]}")
    return work / "_proc"


def _md(text: str) -> str:
    import mistune
    text = re.sub(r"\]\(([\w-]+)\.ipynb(#[^)]*)?\)", lambda m: f"]({m.group(1)}.html{m.group(2) or ''})", text)
    return mistune.html(text)


def _directives(src: str) -> tuple[dict, str]:
    "A code cell's `#| key: value` directives and its code without them."
    lines = src.splitlines()
    flags = {}
    while lines and lines[0].startswith("#|"):
        k, _, v = lines.pop(0)[2:].strip().partition(":")
        flags[k.strip()] = v.strip()
    return flags, "\n".join(lines).strip()


def _output(o: dict) -> str:
    data = o.get("data", {})
    if o["output_type"] == "stream": return f'<pre class="output">{html.escape("".join(o["text"]))}</pre>'
    if o["output_type"] == "error": return f'<pre class="output error">{html.escape(chr(10).join(o.get("traceback", [])))}</pre>'
    if "image/png" in data:
        png = data["image/png"] if isinstance(data["image/png"], str) else "".join(data["image/png"])
        return f'<img src="data:image/png;base64,{png.strip()}">'
    if "text/html" in data: return "".join(data["text/html"])
    if "text/markdown" in data: return _md("".join(data["text/markdown"]))
    if "text/plain" in data: return f'<pre class="output">{html.escape("".join(data["text/plain"]))}</pre>'
    return ""


def page(nb_path: Path) -> tuple[str, str]:
    "A processed notebook as HTML: its title and body."
    nb = json.loads(nb_path.read_text())
    title, parts = nb_path.stem, []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "raw" and src.startswith("---"):
            fm = yaml.safe_load(src.strip().strip("-")) or {}
            title = fm.get("title", title)
            parts.append(f"<h1>{html.escape(title)}</h1>" + (f'<p class="description">{html.escape(fm["description"])}</p>' if fm.get("description") else ""))
        elif c["cell_type"] == "markdown":
            if "AUTOGENERATED" not in src: parts.append(_md(src))
        elif c["cell_type"] == "code":
            flags, code = _directives(src)
            if flags.get("include") == "false": continue
            if flags.get("echo") != "false" and code: parts.append(f'<pre class="code"><code>{html.escape(code)}</code></pre>')
            if flags.get("output") != "false": parts += [_output(o) for o in c.get("outputs", [])]
    return title, "\n".join(parts)


STYLE = """body{font-family:sans-serif;margin:0;display:flex}nav{width:250px;padding:1em;background:#f4f4f8;min-height:100vh;
font-size:14px}nav h4{margin:1em 0 .3em}nav a{display:block;color:#234;text-decoration:none;padding:1px 0}nav a.here{font-weight:bold}
main{max-width:980px;padding:1em 2em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:13px}pre.output{background:#fff;
border-left:3px solid #ccd}img{max-width:100%}p.description{font-size:1.15em;color:#555}.next-on-route{display:block;margin:2em 0;
font-size:1.1em}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 6px}"""


def render(proc: Path, out: Path = OUT) -> list[Path]:
    "HTML of every processed notebook in `out`, with the routes as navigation; the pages, in sidebar order."
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "nbs" / "images", out / "images", dirs_exist_ok=True)   # the pages' local images
    names = ["index.ipynb"] + [p for pages in routes().values() for p in pages if p.endswith(".ipynb")]
    built = {n: page(proc / n) for n in names}
    nxt = next_pages()
    nav = lambda here: "".join(
        [f'<a href="index.html" class="{"here" if here == "index.ipynb" else ""}">Home</a>'] +
        [f"<h4>{html.escape(sec)}</h4>" + "".join(
            f'<a href="{Path(p).stem}.html" class="{"here" if p == here else ""}">{html.escape(built[p][0] if p in built else Path(p).stem)}</a>'
            for p in pages) for sec, pages in routes().items()])
    for p in (proc / "benchmarks.md", ROOT / "nbs" / "benchmarks.md"):   # the one markdown page
        if p.exists(): built["benchmarks.md"] = ("Benchmarks", _md(re.sub(r"^---\n.*?\n---\n", "", p.read_text(), flags=re.S))); break
    pages = []
    for n, (title, body) in built.items():
        follow = nxt.get(n)
        link = (f'<a class="next-on-route" href="{Path(follow).stem}.html">Next: {html.escape(built.get(follow, (Path(follow).stem,))[0])} →</a>'
                if follow else "")
        doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head>"
               f"<body><nav>{nav(n)}</nav><main>{body}{link}</main></body></html>")
        pages.append(out / (Path(n).stem + ".html"))
        pages[-1].write_text(doc)
    return pages


PAGE_STATE = """
const imgs = [...document.images];
const text = document.body.innerText;
const next = document.querySelector('a.next-on-route');
return {images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
        broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80)),
        errors: document.querySelectorAll('pre.error').length,
        traceback: text.includes('Traceback (most recent call last)'),
        directives: text.split('\\n').filter(l => /^\\s*#\\|/.test(l)).slice(0, 3),
        prompts: /In \\[[ 0-9]*\\]:/.test(text),
        next: next ? next.getAttribute('href') : null,
        text: text, height: document.body.scrollHeight, title: document.title};
"""

READY = """
const n = arguments[0];
return document.readyState === 'complete' && document.images.length >= n && [...document.images].every(i => i.complete);
"""


def check(pages: list[Path], out: Path = OUT) -> dict[str, dict]:
    "Open each page in headless Chromium: its state (images, errors, directives, next link, text) and a screenshot."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import TimeoutException
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    report = {}
    try:
        for p in pages:
            driver.get(p.resolve().as_uri())
            n_img = p.read_text().count("<img")
            try: WebDriverWait(driver, 60, poll_frequency=0.25).until(lambda d: d.execute_script(READY, n_img))
            except TimeoutException: pass   # reported below: fewer images, or some not loaded
            state = driver.execute_script(PAGE_STATE)
            state["in_source"] = n_img
            driver.set_window_size(1280, min(max(state["height"], 1000), 16000))
            driver.save_screenshot(str(out / (p.stem + ".png")))
            report[p.name] = state
    finally: driver.quit()
    return report


def problems(report: dict[str, dict]) -> dict[str, list[str]]:
    "What is wrong on each page: images, errors, directives or prompts shown, a missing or wrong next link."
    nxt = {Path(k).stem + ".html": Path(v).stem + ".html" for k, v in next_pages().items()}
    bad = {}
    for name, st in report.items():
        found = [f"{st['loaded']}/{st['images']} images loaded, {st['in_source']} in the source"] if st["broken"] or st["images"] != st["in_source"] else []
        found += ["error output"] * bool(st["errors"]) + ["a traceback"] * st["traceback"] + ["In [ ]: prompts"] * st["prompts"]
        found += [f"directive lines shown: {st['directives']}"] * bool(st["directives"])
        if st["next"] != nxt.get(name): found.append(f"next link {st['next']}, not {nxt.get(name)}")
        if found: bad[name] = found
    return bad


def main():
    pages = render(process())
    report = check(pages)
    (OUT / "report.json").write_text(json.dumps({k: {kk: v for kk, v in st.items() if kk != "text"} for k, st in report.items()}, indent=1))
    for k, v in report.items():
        print(f"{k}: {v['loaded']}/{v['images']} images loaded, next: {v['next']}")
    if (bad := problems(report)): sys.exit(f"docs_check: {bad}")
    print(f"pages and screenshots in {OUT}/")


if __name__ == "__main__":
    main()
