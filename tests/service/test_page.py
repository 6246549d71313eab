"""The web page in a real browser: Debian's Chromium, headless, driven by playwright, against a real uvicorn.

The server serves two collections from one catalog: ``default`` (96 sample emoji of both vendors)
and ``twitter`` (24 of them, one vendor), with a micro CLIP trained for a few steps. A failing test
leaves a screenshot of the page (its path is printed). With ``PAGE_SCREENSHOTS=DIR`` the tests also
save the views a person looks at (text results, image results, classify, the encoder panel) to
``DIR/page_*.png``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import running_service, write_manifest

CHROMIUM = Path("/usr/bin/chromium")

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extras bring it
    sync_playwright = None


def _missing() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return "Chromium is not installed (apt-get install chromium; .ci/run does it)"
    return None


@pytest.fixture(scope="module")
def two_collections(tmp_path_factory, small_manifest, micro_encoder, indexed_rows) -> dict:
    """``default`` and ``twitter`` indexed into one catalog of their own (the shared fixtures' stays as it is)."""
    from index.job import BuildConfig, build

    root = tmp_path_factory.mktemp("page")
    url = f"sqlite:///{root / 'catalog.db'}"
    twitter = write_manifest(root / "twitter.jsonl", [r for r in indexed_rows if r["vendor"] == "twitter"][:24])
    for collection, source in (("default", small_manifest), ("twitter", twitter)):
        report = build(BuildConfig(encoder=str(micro_encoder), source=source, out=root / collection, database_url=url,
                                   collection=collection, workers=0, progress=False))
        assert report.indexed and not report.failures
    return {"encoder": str(micro_encoder), "root": root, "database_url": url}


@pytest.fixture(scope="module")
def site(two_collections) -> str:
    problem = _missing()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need it in CI: {problem}")
        pytest.skip(problem)
    root = two_collections["root"]
    extra = {"twitter": {"encoder": two_collections["encoder"], "index": str(root / "twitter")}}
    with running_service(two_collections["encoder"], root / "default", two_collections["database_url"],
                         settings={"extra_collections": json.dumps(extra)}, timeout=300) as base:
        yield base


@pytest.fixture(scope="module")
def browser(site):
    with sync_playwright() as p:
        exe = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, site, request, tmp_path_factory):
    """A fresh page at the site, loaded and ready; a screenshot is saved if the test fails."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    console_errors: list[str] = []
    pg.on("pageerror", lambda exc: console_errors.append(str(exc)))
    pg.goto(site + "/")
    expect(pg.locator("#status")).to_contain_text("images in")
    failed_before = request.session.testsfailed
    yield pg
    if request.session.testsfailed > failed_before:
        shot = tmp_path_factory.mktemp("page-failures") / f"{request.node.name}.png"
        pg.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failed page: {shot}")
    context.close()
    assert not console_errors, console_errors  # the script never threw


def keep_screenshot(pg, name: str) -> None:
    folder = os.environ.get("PAGE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(Path(folder) / f"page_{name}.png"), full_page=True)


def cards(pg):
    return pg.locator("#results li.card")


def wait_images_loaded(pg) -> list[int]:
    """Wait until every result picture has loaded; returns their natural widths."""
    pg.wait_for_function("""() => [...document.querySelectorAll('#results img')]
                                  .every((img) => img.complete)""")
    return pg.eval_on_selector_all("#results img", "imgs => imgs.map((img) => img.naturalWidth)")


def search_text(pg, text: str, k: int = 8) -> None:
    pg.select_option("#k", str(k))
    pg.fill("#query", text)
    pg.press("#query", "Enter")  # the keyboard submits
    expect(pg.locator("#message")).to_contain_text("results for")


def test_typed_query_shows_result_pictures(page):
    expect(page.locator("#status")).to_contain_text("96 images in “default”")
    search_text(page, "dog face")
    expect(cards(page)).to_have_count(8)
    widths = wait_images_loaded(page)
    assert len(widths) == 8 and all(w > 0 for w in widths), widths
    scores = [float(t.removeprefix("score ")) for t in page.locator("#results .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    keep_screenshot(page, "text_results")


def test_chosen_file_finds_lookalikes(page, sample_png, indexed_rows):
    page.select_option("#k", "8")
    page.set_input_files("#file", str(sample_png))
    expect(page.locator("#message")).to_contain_text("results for “")
    expect(cards(page)).to_have_count(8)
    assert all(w > 0 for w in wait_images_loaded(page))
    assert page.locator("#results .name").first.inner_text() == indexed_rows[0]["name"]  # the image itself
    assert page.eval_on_selector("#preview", "img => img.naturalWidth") > 0  # the chosen file is shown
    keep_screenshot(page, "image_results")


def test_classify_draws_a_bar_for_every_label(page, sample_png):
    page.set_input_files("#file", str(sample_png))
    expect(page.locator("#message")).to_contain_text("results for")
    page.fill("#labels", "dog, flag, keycap, heart, vehicle")
    page.click("#classify-form button")
    expect(page.locator("#message")).to_contain_text("classified into 5 labels")
    rows = page.locator("#labels-out li")
    expect(rows).to_have_count(5)
    assert sorted(rows.locator(".label").all_inner_texts()) == ["dog", "flag", "heart", "keycap", "vehicle"]
    bars = page.eval_on_selector_all("#labels-out li", """rows => rows.map((row) => ({
        bar: row.querySelector('.bar').getBoundingClientRect().width,
        track: row.querySelector('.track').getBoundingClientRect().width,
        shown: parseFloat(row.querySelector('.p').textContent) }))""")
    assert all(b["bar"] > 0 for b in bars), bars  # every label has a visible bar
    track = bars[0]["track"]
    for b in bars:  # drawn to scale: width = probability x track (the thinnest are drawn at 2 px)
        assert b["bar"] == pytest.approx(max(2.0, track * b["shown"] / 100), abs=track * 0.002 + 1), b
    assert sum(b["shown"] for b in bars) == pytest.approx(100, abs=0.3)
    keep_screenshot(page, "classify")


def test_details_and_more_like_this(page, site):
    search_text(page, "red heart")
    first = cards(page).first
    name = first.locator(".name").inner_text()
    first_src = first.locator("img").get_attribute("src")
    first.locator(".pick").click()  # a result's details
    details = page.locator("#details")
    expect(details).to_be_visible()
    expect(page.locator("#details-title")).to_have_text(name)
    expect(page.locator("#details-meta")).to_contain_text("source")
    expect(page.locator("#details-meta")).to_contain_text("sha256")  # fetched from GET /v1/items/{id}
    expect(page.locator("#details-meta")).to_contain_text("vendor")
    href = page.get_attribute("#details-link", "href")
    image = page.request.get(f"{site}/{href}")
    assert image.status == 200 and image.headers["content-type"].startswith("image/")
    page.keyboard.press("Escape")
    expect(details).to_be_hidden()

    first.locator(".like").click()  # more like this, from the card
    expect(page.locator("#message")).to_contain_text(f"results for items like “{name}”")
    expect(cards(page)).to_have_count(8)
    assert all(w > 0 for w in wait_images_loaded(page))
    srcs = [img.get_attribute("src") for img in page.locator("#results img").all()]
    assert first_src not in srcs  # the item itself is left out

    cards(page).nth(2).locator(".pick").click()  # and from the details panel
    expect(details).to_be_visible()
    other = page.locator("#details-title").inner_text()
    page.click("#details-like")
    expect(details).to_be_hidden()
    expect(page.locator("#message")).to_contain_text(f"items like “{other}”")


def test_load_more_appends_the_next_page(page):
    search_text(page, "smiling face", k=8)
    expect(cards(page)).to_have_count(8)
    first_page = page.eval_on_selector_all("#results img", "imgs => imgs.map((img) => img.src)")
    page.click("#more")
    expect(cards(page)).to_have_count(16)
    expect(page.locator("#message")).to_contain_text("16 results")
    both = page.eval_on_selector_all("#results img", "imgs => imgs.map((img) => img.src)")
    assert both[:8] == first_page and len(set(both)) == 16  # page 2 follows page 1, nothing twice
    assert all(w > 0 for w in wait_images_loaded(page))
    scores = [float(t.removeprefix("score ")) for t in page.locator("#results .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)


def test_errors_are_shown_readably(page, tmp_path, sample_png):
    page.fill("#query", "   ")
    page.click("#text-form button")
    message = page.locator("#message")
    expect(message).to_have_class("message error")
    expect(message).to_contain_text("the query is empty")

    broken = tmp_path / "holiday.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not really a picture" * 20)
    page.set_input_files("#file", str(broken))
    expect(message).to_have_class("message error")
    assert "500" not in message.inner_text() and len(message.inner_text()) > 10
    expect(cards(page)).to_have_count(0)

    page.click("#classify-form button")  # no labels given
    expect(message).to_contain_text("give some labels")

    page.set_input_files("#file", str(sample_png))  # and the page carries on
    expect(message).to_contain_text("results for")
    expect(message).not_to_have_class("message error")


def test_filters_offer_the_catalogs_values(page):
    vendor = page.locator("#filters select[data-key=vendor]")
    expect(vendor).to_be_visible()
    options = vendor.locator("option").all_inner_texts()
    assert options == ["any vendor", "google (48)", "twitter (48)"]
    assert page.locator("#filters select[data-key=category] option").count() > 2
    assert page.locator("#filters select[data-key=name]").count() == 0  # too many values to be a filter
    search_text(page, "face", k=16)
    vendor.select_option(label="google (48)")  # changing a filter runs the search again
    expect(page.locator("#message")).to_contain_text("where vendor = google")
    expect(cards(page)).to_have_count(16)
    assert all(t.startswith("google") for t in page.locator("#results .meta").all_inner_texts())


def test_collection_picker_switches_collections(page):
    picker = page.locator("#collection")
    expect(picker).to_be_visible()
    assert picker.locator("option").all_inner_texts() == ["default (96)", "twitter (24)"]
    picker.select_option("twitter")
    expect(page.locator("#status")).to_contain_text("24 images in “twitter”")
    expect(page.locator("#filters select[data-key=vendor]")).to_have_count(0)  # one vendor: nothing to choose
    search_text(page, "face", k=32)
    expect(cards(page)).to_have_count(24)
    assert all(w > 0 for w in wait_images_loaded(page))  # pictures come from the chosen collection
    assert all(t.startswith("twitter") for t in page.locator("#results .meta").all_inner_texts())


def test_about_this_encoder_panel(page):
    panel = page.locator("#about")
    expect(panel).to_be_hidden()
    page.click("#about-toggle")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("clip")
    expect(panel).to_contain_text("lookalike-micro")
    expect(panel).to_contain_text("5 of batch 32")
    expect(panel).to_contain_text("small.jsonl")  # what it was trained on
    table = panel.locator("table.quality")
    expect(table).to_have_count(1)
    assert table.locator("th").all_inner_texts() == ["encoder", "R@1", "R@5", "R@10"]
    assert [r.split("\t")[0] for r in table.locator("tr").all_inner_texts()[1:]] == ["untrained", "trained"]
    keep_screenshot(page, "encoder_panel")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()


def test_keyboard_and_paste(page, sample_png, indexed_rows):
    page.locator("body").press("/")  # "/" jumps to the search box
    expect(page.locator("#query")).to_be_focused()
    page.keyboard.type("keycap")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("results for “keycap”")

    # Enter on the drop zone opens the file chooser (the file input is clicked). Chromium does not always
    # raise its filechooser event for a second page of one browser, so the click itself is what is checked.
    page.evaluate("window.fileClicks = 0; document.getElementById('file')"
                  ".addEventListener('click', () => { window.fileClicks += 1; })")
    page.focus("#drop")
    page.keyboard.press("Enter")
    page.wait_for_function("window.fileClicks === 1")
    page.set_input_files("#file", str(sample_png))
    expect(page.locator("#message")).to_contain_text(f"results for “{sample_png.name}”")

    page.locator("#results .pick").first.focus()  # a result opens with Enter
    page.keyboard.press("Enter")
    expect(page.locator("#details")).to_be_visible()
    page.keyboard.press("Escape")

    data = list(sample_png.read_bytes())  # a pasted image searches like a chosen one
    page.evaluate("""(bytes) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "", { type: "image/png" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
    }""", data)
    expect(page.locator("#message")).to_contain_text("results for the image")
    assert page.locator("#results .name").first.inner_text() == indexed_rows[0]["name"]
