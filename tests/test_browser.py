"""The app in headless Chromium (Debian's package, driven by Playwright; never a browser download).

Runs NER in the UI, switches tabs, and checks that a Plotly chart renders. Set MADX_SCREENSHOT_DIR to keep
screenshots of the Explore and Transfer scores tabs for a human to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import serve_app

from scripts.screenshots import CHROMIUM, TABS, launch_browser, open_tab, page_width, too_wide

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    demo = serve_app(tmp_path_factory.mktemp("browser"))
    yield demo.local_url
    demo.close()


def _shot(page, name: str) -> None:
    out = os.environ.get("MADX_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def test_ner_tabs_and_chart_in_chromium(app_url):
    from playwright.sync_api import expect, sync_playwright

    text = "Amina Yusuf joined the World Health Organization in Geneva."
    with sync_playwright() as p:
        browser = launch_browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url, wait_until="domcontentloaded")
            box = page.locator("#ner-text textarea")
            expect(box).to_be_visible(timeout=30_000)
            box.fill(text)
            page.locator("#ner-run").click()
            # The highlighted output shows the whole text once the answer arrives.
            expect(page.locator("#ner-out")).to_contain_text("Geneva", timeout=60_000)
            expect(page.get_by_text("Parameter budget")).to_be_visible(timeout=30_000)  # the stack diagram
            _shot(page, "explore")

            page.get_by_role("tab", name="Transfer scores").click()
            chart = page.locator(".js-plotly-plot").first
            expect(chart).to_be_visible(timeout=30_000)
            assert page.locator(".js-plotly-plot svg").count() > 0
            _shot(page, "scores")

            page.get_by_role("tab", name="How it works").click()
            expect(page.get_by_text("Try it on your own text")).to_be_visible(timeout=10_000)
        finally:
            browser.close()


# ----------------------------------------------------------------------------------------------------------
# Issue #14: layout at a laptop size and a phone size


SIZES = [(1366, 900), (390, 844)]


@pytest.mark.parametrize("size", SIZES, ids=["1366x900", "390x844"])
def test_layout_examples_and_diagram(app_url, size):
    from playwright.sync_api import expect, sync_playwright

    width, height = size
    with sync_playwright() as p:
        browser = launch_browser(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(app_url, wait_until="domcontentloaded")
            expect(page.locator("#ner-text textarea")).to_be_visible(timeout=30_000)

            # An example runs on click, with its own language's adapter; the result sits beside (or right under)
            # the input, above the fold on a laptop.
            page.locator("#ner-examples button").filter(has_text="sw ·").first.click()
            expect(page.locator("#ner-note")).to_contain_text("Swahili language adapter", timeout=60_000)
            expect(page.locator("#ner-out")).to_contain_text("Juma", timeout=60_000)
            expect(page.locator("#stack-diagram")).to_contain_text("language adapter</b> 'sw'".replace("</b>", ""))
            if width > 1000:
                top = page.evaluate("() => document.querySelector('#ner-out').getBoundingClientRect().top")
                assert top < height - 150, f"the result starts at y={top}, below the fold"
            else:  # on a phone the result comes right after the input and the buttons, before the examples
                out_y = page.locator("#ner-out").bounding_box()["y"]
                assert out_y < page.locator("#ner-examples").bounding_box()["y"]
                assert page.locator("#ner-run").bounding_box()["y"] < page.locator("#ner-examples").bounding_box()["y"]

            # Compare: the three columns come into view, and no word is cut in the middle.
            page.locator("#ner-compare").click()
            expect(page.locator("#compare-summary")).to_contain_text("ner_lad", timeout=90_000)
            page.wait_for_timeout(1200)  # the smooth scroll
            top = page.evaluate("() => document.querySelector('#compare').getBoundingClientRect().top")
            assert -50 < top < height / 2, f"the compare results start at y={top}"
            breaks = page.evaluate(
                "() => [...document.querySelectorAll('.madx-highlight *')].map(e => getComputedStyle(e).wordBreak)"
            )
            assert "break-all" not in breaks

            # A language without an adapter says which one it used instead.
            page.locator("#ner-examples button").filter(has_text="fr ·").first.click()
            expect(page.locator("#ner-note")).to_contain_text("no French adapter ships", timeout=60_000)

            # The QA tab's diagram names the QA adapter and head.
            page.get_by_role("tab", name="Question answering (QA)").click()
            expect(page.locator("#stack-diagram[data-task='qa']")).to_be_visible(timeout=30_000)
            expect(page.locator("#stack-diagram")).to_contain_text("head 'qa'")
            page.locator("#qa-examples button").first.click()
            expect(page.locator("#qa-out")).to_contain_text("Khartoum", timeout=60_000)
            expect(page.locator("#qa-note")).to_contain_text("XQuAD")

            # The legend says what the colours and numbers mean.
            page.get_by_role("tab", name="Named entities (NER)").click()
            expect(page.locator("#entity-legend")).to_contain_text("confidence")

            # No tab scrolls sideways.
            for _, name in TABS:
                open_tab(page, name)
                if name == "Transfer scores":
                    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
                    expect(page.locator("#task-reading")).to_contain_text("generated from")
                page.wait_for_timeout(500)
                assert page_width(page) <= width, (name, page_width(page), too_wide(page, width))
        finally:
            browser.close()


def test_loss_curve_is_live_and_not_covered(app_url):
    """A 30-step job from the page: the curve gains points while it runs, with the progress in the status line."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(app_url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Train", exact=True).click()
            page.locator("#lang-sample").click()
            expect(page.locator("#lang-text textarea")).not_to_have_value("", timeout=10_000)
            steps = page.locator("#lang-steps input[type=number]")
            steps.fill("30")
            steps.press("Enter")
            page.locator("#lang-train").click()
            counts, progress_seen = [], False
            points = """() => { const g = document.querySelector('#loss-plot .js-plotly-plot');
                return g && g.data && g.data.length ? g.data[0].x.length : 0; }"""
            for _ in range(600):
                counts.append(page.evaluate(points))
                status = page.locator("#train-status").inner_text()
                progress_seen |= "%" in status and "step" in status
                if "Trained language adapter" in status or "Not started" in status:
                    break
                page.wait_for_timeout(250)
            assert "Trained language adapter" in page.locator("#train-status").inner_text()
            during = sorted({n for n in counts if 0 < n < 30})
            assert len(during) >= 3, f"the curve had {during} points while the job ran"
            assert progress_seen  # the progress is in the status line, beside the curve
            # Gradio's progress overlay never covered the plot.
            assert page.locator("#loss-plot .wrap.default:not(.hide)").count() == 0
        finally:
            browser.close()
