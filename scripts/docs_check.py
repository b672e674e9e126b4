"""The docs pages as a reader sees them: render every notebook's stored outputs to HTML (nbconvert; the site itself
is rendered by Quarto, which also shows notebooks as stored), open each page in headless Chromium, keep a
full-page screenshot in _docs_preview/, and report per page: images found and loaded, and any error output.

    python scripts/docs_check.py            # needs Debian's chromium and chromium-driver (apt-get install ...)

Exits non-zero, naming the page, if an image did not load or a page shows an error or a traceback.
"""
import json, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
OUT = ROOT / "_docs_preview"
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"

PAGE_STATE = """
const imgs = [...document.images];
const text = document.body.innerText;
return {images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
        broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80)),
        errors: document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"], .output_error').length,
        traceback: text.includes('Traceback (most recent call last)'),
        height: document.body.scrollHeight, title: document.title};
"""

READY = """
const [stem, n] = arguments;
return document.readyState === 'complete' && document.title === stem && document.images.length >= n
       && [...document.images].every(i => i.complete);
"""


def render(out: Path = OUT) -> list[Path]:
    "HTML of every notebook as stored (no execution), in `out`."
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "nbs" / "images", out / "images", dirs_exist_ok=True)   # the pages' local images
    nbs = sorted((ROOT / "nbs").glob("*.ipynb"))
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "html", "--output-dir", str(out), *map(str, nbs)],
                   check=True, capture_output=True)
    return [out / (nb.stem + ".html") for nb in nbs]


def check(pages: list[Path], out: Path = OUT) -> dict[str, dict]:
    "Open each page in headless Chromium: its state (images, errors) and a full-page screenshot next to it."
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
        for page in pages:
            driver.get(page.resolve().as_uri())
            # a loaded page holds every <img> of its source: under load Chromium can hand the page back before the
            # body is parsed, so wait (up to a minute) for the title, the full DOM and every image to finish
            n_img = page.read_text().count("<img")
            try: WebDriverWait(driver, 60, poll_frequency=0.25).until(lambda d: d.execute_script(READY, page.stem, n_img))
            except TimeoutException: pass   # reported below: fewer images, or some not loaded
            state = driver.execute_script(PAGE_STATE)
            state["in_source"] = n_img
            driver.set_window_size(1280, min(max(state["height"], 1000), 16000))
            driver.save_screenshot(str(out / (page.stem + ".png")))
            report[page.name] = state
    finally: driver.quit()
    return report


def main():
    report = check(render())
    (OUT / "report.json").write_text(json.dumps(report, indent=1))
    bad = {k: v for k, v in report.items() if v["broken"] or v["images"] != v["in_source"] or v["errors"] or v["traceback"]}
    for k, v in report.items():
        print(f"{k}: {v['loaded']}/{v['images']} images loaded ({v['in_source']} in the source), {v['errors']} error outputs{', TRACEBACK' if v['traceback'] else ''}")
    if bad: sys.exit(f"docs_check: problems on {sorted(bad)}")
    print(f"screenshots in {OUT}/")


if __name__ == "__main__":
    main()
