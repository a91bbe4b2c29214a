"""The serving page in a real browser: headless Chromium loads http://HOST:PORT/, types a prompt, clicks Generate,
waits for the streamed text, checks it, and saves a screenshot.

    python serve.py --checkpoint CKPT &
    python bench/page_check.py --url http://127.0.0.1:8000/ --out docs/serve_page.png

Needs Playwright's Python package (``pip install playwright``) and a Chromium (Debian: ``apt install chromium``).
"""

import argparse
import sys
import time

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--out", default="docs/serve_page.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--characters", type=int, default=400)
    args = parser.parse_args()
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=flags)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.goto(args.url)
        page.fill("#prompt", args.prompt)
        page.fill("#max_new_tokens", str(args.characters))
        page.fill("#seed", "1337")
        start = time.perf_counter()
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('seed')", timeout=120_000)
        seconds = time.perf_counter() - start
        output = page.inner_text("#output")
        status = page.inner_text("#status")
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    generated = len(output) - len(args.prompt)
    print(f"page: {status!r} in {seconds:.1f} s; {generated} characters after the prompt; screenshot {args.out}")
    if not output.startswith(args.prompt) or generated < args.characters or "error" in status:
        sys.exit(f"error: the page did not generate as expected: {status!r}")


if __name__ == "__main__":
    main()
