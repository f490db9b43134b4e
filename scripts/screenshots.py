"""Screenshots of every tab of the app at a laptop size (1366x900) and a phone size (390x844).

Starts the app on the shipped adapters (a temporary work folder), drives Debian's chromium through Playwright
(never a browser download), runs one NER and one QA example so the pages show results, and writes
docs/screenshots/<tab>-<width>.png. It also prints, as JSON, what the issue #14 checks measure: each tab's page
width against the viewport, and where the first result lands.

    python -m scripts.screenshots [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SIZES = {"desktop": (1366, 900), "phone": (390, 844)}
TABS = [("explore", "Explore"), ("train", "Train"), ("scores", "Transfer scores"), ("howto", "How it works")]


def launch_browser(playwright):
    """Debian's headless chromium through Playwright (never a browser download); the caller closes it."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def page_width(page) -> int:
    """How wide the page's content is (a page wider than the viewport scrolls sideways)."""
    return int(page.evaluate("() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"))


def too_wide(page, limit: int) -> list[str]:
    """Visible elements whose right edge passes `limit` px (to find what makes a page scroll sideways)."""
    return page.evaluate(
        """(limit) => {
          const wide = e => { const r = e.getBoundingClientRect();
            return r.width > 0 && r.right > limit + 1 && getComputedStyle(e).visibility !== 'hidden'; };
          return [...document.querySelectorAll('body *')].filter(e => wide(e) && ![...e.children].some(wide))
        .slice(0, 12).map(e => `${e.tagName.toLowerCase()}#${e.id}.${[...e.classList].slice(0, 3).join('.')} `
            + `${Math.round(e.getBoundingClientRect().right)}px`)}""",
        limit,
    )


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).first.click()
    page.wait_for_timeout(600)


def run_first_example(page, which: str = "ner") -> None:
    from playwright.sync_api import expect

    page.locator(f"#{which}-examples button").first.click()
    expect(page.locator(f"#{which}-out")).to_contain_text("Geneva" if which == "ner" else "Khartoum", timeout=90_000)


def launch(work: Path):
    """The app on the shipped assets, on a free port; returns the Gradio Blocks (demo.local_url)."""
    os.environ.setdefault("MADX_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import torch

    from app import build_app, launch_kwargs

    torch.set_num_threads(2)
    demo = build_app(work_dir=work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(demo.state))
    return demo


def shoot(url: str, out: Path) -> dict:
    from playwright.sync_api import expect, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    with sync_playwright() as p:
        browser = launch_browser(p)
        try:
            for size, (w, h) in SIZES.items():
                if os.environ.get("SHOTS_ONLY") and size != os.environ["SHOTS_ONLY"]:
                    continue
                page = browser.new_page(viewport={"width": w, "height": h})
                page.goto(url, wait_until="domcontentloaded")
                expect(page.locator("#ner-text textarea")).to_be_visible(timeout=60_000)
                run_first_example(page, "ner")
                report[f"{size} first NER result y"] = page.evaluate(
                    "() => Math.round(document.querySelector('#ner-out').getBoundingClientRect().top + window.scrollY)"
                )
                page.locator("#ner-compare").click()
                expect(page.locator("#compare-summary")).to_contain_text("ner_lad", timeout=90_000)
                page.wait_for_timeout(1200)
                report[f"{size} compare top after click"] = page.evaluate(
                    "() => Math.round(document.querySelector('#compare').getBoundingClientRect().top)"
                )
                page.evaluate("() => window.scrollTo(0, 0)")
                for key, name in TABS:
                    open_tab(page, name)
                    if key == "train":  # a short job, so the page shows its loss curve and status
                        page.locator("#lang-sample").click()
                        steps = page.locator("#lang-steps input[type=number]")
                        steps.fill("20")
                        steps.press("Enter")
                        page.locator("#lang-train").click()
                        expect(page.locator("#train-status")).to_contain_text("Trained", timeout=300_000)
                    if key == "scores":
                        expect(page.locator("#bars-plot .js-plotly-plot")).to_be_visible(timeout=60_000)
                    page.wait_for_timeout(800)
                    report[f"{size} {key} width"] = page_width(page)
                    report[f"{size} {key} too wide"] = too_wide(page, w)
                    page.screenshot(path=str(out / f"{key}-{w}.png"), full_page=True)
                open_tab(page, "Explore")
                page.get_by_role("tab", name="Question answering (QA)").click()
                run_first_example(page, "qa")
                page.screenshot(path=str(out / f"explore-qa-{w}.png"), full_page=True)
                report[f"{size} explore-qa width"] = page_width(page)
                page.close()
        finally:
            browser.close()
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "screenshots"))
    args = ap.parse_args()
    demo = launch(Path(tempfile.mkdtemp(prefix="madx-shots-")))
    try:
        report = shoot(demo.local_url, Path(args.out))
    finally:
        demo.close()
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
