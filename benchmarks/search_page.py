"""A screenshot of `htp serve`'s search page in headless Chromium (Debian's browser, driven by Playwright) after
a real query over the sample index, for the docs (Results, Serving).

    python -m benchmarks.search_page --index out/sample-index
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from benchmarks.harness.serving import serving


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("out/sample-index"))
    parser.add_argument("--query", default="how do I read and write compressed archive files?")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_page.png"))
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is not installed (`make test` installs it)")
    with serving(args.index) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url + "/")
        page.fill("#q", args.query)
        page.click("button[type=submit]")
        page.wait_for_selector("#results li")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        print(page.locator("#status").inner_text())
        print("\n".join(page.locator("#results li .title").all_inner_texts()))
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
