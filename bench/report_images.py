"""Write the report pictures in ``docs/images`` with the shipped model (run from the repo root).

    python bench/report_images.py [--out runs/report_images] [--images docs/images]

Runs the default quickstart (:func:`echosonar.app.quickstart.run_demo`: two studies simulated
with seed 2026 — never trained on — and pydicom's real SonoSite A4C cine, analysed by the
shipped model ``models/echosonar-r``) and screenshots, with headless Chromium through Selenium
(``apt-get install chromium chromium-driver``; ``pip install -e '.[browser]'``):

- ``report_page.png``      the report page of simulated study 1 (full page)
- ``report_real_cine.png`` the report page of the real cine
- ``quickstart_index.png`` the quickstart's index page

Tests never write these files; rerun this after re-shipping the model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

CHROMIUM = os.environ.get("ECHOSONAR_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("ECHOSONAR_CHROMEDRIVER", "/usr/bin/chromedriver")


def screenshot(driver, page: Path, dest: Path, width: int = 1400, max_h: int = 6000) -> None:
    driver.set_window_size(width, 1000)
    driver.get(page.resolve().as_uri())
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(600, height), max_h))
    driver.execute_script("window.scrollTo(0, 0)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(dest)):
        raise RuntimeError(f"screenshot of {page} failed")
    print(f"wrote {dest}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/report_images", help="quickstart output folder")
    ap.add_argument("--images", default="docs/images", help="where the PNGs go")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from echosonar.app.quickstart import DEMO_SEED, run_demo

    out, images = Path(args.out), Path(args.images)
    demo = run_demo(out, studies=2, seed=DEMO_SEED)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--disable-background-networking", "--no-first-run"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        sim = next(d for d in demo if d.source == "simulated")
        screenshot(driver, out / "analysis" / sim.folder / "report.html",
                   images / "report_page.png")
        real = next((d for d in demo if d.source == "real"), None)
        if real is not None and real.status == "ok":
            screenshot(driver, out / "analysis" / real.folder / "report.html",
                       images / "report_real_cine.png")
        screenshot(driver, out / "index.html", images / "quickstart_index.png", max_h=1200)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
