"""The try-it page and the result files, through the real stack.

Nginx serves the page and /results/; uWSGI runs the app. Headless Chromium from Debian
(chromium, chromium-driver; .ci/run installs them) is driven by selenium; without them the
browser tests skip and say why. Screenshots go to run/artifacts/ (git-ignored) for a person to
look at; their paths are printed (pytest -s, or in a failure's captured output).
"""

from __future__ import annotations

import io
import re
import shutil
import signal
from pathlib import Path

import pytest
from PIL import Image

from service.ops import deploy
from service.settings import ROOT
from service.web.annotate import ID_PATTERN
from tests.stack import Stack, http
from tests.support import multipart, png, words

pytestmark = pytest.mark.stack


try:  # from requirements.txt; without it the browser tests skip (see `browser`)
    from selenium import webdriver
    from selenium.webdriver import ActionChains
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    webdriver = None

LINES = ["Invoice 2041", "Total due 318.40", "Paid by card"]
ARTIFACTS = ROOT / "run" / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-quic", "--window-size=1280,1000")
WAIT_S = 120  # the first parse on a cold 2-core machine takes a few seconds; leave room


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    return stack_factory([{"processes": 1}])


@pytest.fixture(scope="module")
def page_file(render, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "invoice.png"
    path.write_bytes(png(render(LINES)))
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile; quit (browser and driver) whatever the tests did."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/lib/chromium")
    if not chromium or not chromedriver:
        pytest.skip("Chromium is missing: apt-get install chromium chromium-driver (.ci/run installs them)")
    if webdriver is None:
        pytest.skip("selenium is missing: pip install -r requirements.txt")
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    # Both paths given: selenium never runs Selenium Manager, which would try to download a driver.
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver, log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def by_css(driver, selector: str):
    return driver.find_elements(By.CSS_SELECTOR, selector)


def upload(driver, path: Path):
    """Send `path` through the page's file input; its card once it is done or failed."""
    before = len(by_css(driver, ".card"))
    by_css(driver, "#file-input")[0].send_keys(str(path))

    def settled(d):
        cards = by_css(d, ".card")
        return len(cards) > before and cards[-1].get_attribute("aria-busy") == "false"

    WebDriverWait(driver, WAIT_S).until(settled)
    return by_css(driver, ".card")[-1]


def screenshot(driver, name: str) -> Path:
    """The whole page as a PNG under run/artifacts/, its path printed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    height = driver.execute_script("return document.documentElement.scrollHeight")
    # A viewport as tall as the page, so the shot holds all of it; then back to the window's size.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": min(height, 4000), "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"screenshot: {path}")
    return path


def csp_violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def test_page_is_served_with_its_headers(stack: Stack):
    r = http(stack.url + "/")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "img-src 'self' blob: data:" in csp
    # Offline: the page loads nothing from another host.
    assert not re.search(rb"""(src|href)=["']?(https?:)?//""", r.body)
    for asset, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        a = http(stack.url + asset)
        assert a.status == 200 and a.headers["Content-Type"].startswith(kind)
        assert a.headers["X-Content-Type-Options"] == "nosniff"
    assert http(stack.url + "/index.html").status == 404


@pytest.mark.browser
def test_upload_shows_text_and_one_box_per_line(stack: Stack, browser, page_file: Path):
    browser.get(stack.url + "/")
    assert "parse" in browser.title
    # The footer names the serving model, asked from v1/models when the page loads.
    WebDriverWait(browser, 10).until(lambda d: " on cpu" in by_css(d, "#model-info")[0].text)
    card = upload(browser, page_file)
    assert "done" in card.get_attribute("class"), card.text

    text = by_css(card, ".fulltext")[0].get_attribute("value")
    assert {"invoice", "2041", "total", "318.40", "paid", "card"} <= words(text), text
    items = by_css(card, ".lines .line")
    boxes = by_css(card, "svg.overlay polygon")
    assert len(items) == len(boxes) == len(LINES)
    assert [i.find_element(By.CSS_SELECTOR, ".ltext").text for i in items] == text.split("\n")
    assert all(re.fullmatch(r"\d+%", i.find_element(By.CSS_SELECTOR, ".conf-num").text) for i in items)
    timing = by_css(card, ".timing")[0].text
    for stage in ("Decode", "Detect", "Recognize", "Server total", "Round trip"):
        assert stage in timing

    # The boxes lie on the text as displayed: the first one's corner, scaled to the shown size.
    geometry = browser.execute_script("""
        const card = arguments[0], img = card.querySelector('.photo'), box = card.querySelector('polygon');
        const i = img.getBoundingClientRect(), b = box.getBoundingClientRect();
        const pts = box.points, xs = [], ys = [];
        for (let k = 0; k < pts.numberOfItems; k++) { xs.push(pts.getItem(k).x); ys.push(pts.getItem(k).y); }
        return {scale: i.width / img.naturalWidth, left: b.left - i.left, top: b.top - i.top,
                x: Math.min(...xs), y: Math.min(...ys), loaded: img.complete && img.naturalWidth > 0};
    """, card)
    assert geometry["loaded"]
    assert abs(geometry["left"] - geometry["x"] * geometry["scale"]) < 3
    assert abs(geometry["top"] - geometry["y"] * geometry["scale"]) < 3

    # Hovering a box lights its line, and hovering a line lights its box.
    ActionChains(browser).move_to_element(boxes[1]).perform()
    assert "active" in items[1].get_attribute("class")
    assert "active" not in items[0].get_attribute("class")
    ActionChains(browser).move_to_element(items[2]).perform()
    assert "active" in boxes[2].get_attribute("class")
    assert "active" not in boxes[1].get_attribute("class")
    # Keyboard: a focused line lights its box too.
    browser.execute_script("arguments[0].focus()", items[0])
    assert "active" in boxes[0].get_attribute("class")

    copy = by_css(card, "button.copy")[0]
    copy.click()
    # The label changes once the clipboard's promise settles, and stays for 1.6 s (app.js).
    WebDriverWait(browser, 1.5).until(lambda _: copy.text.startswith("Copied"))

    assert csp_violations(browser) == []
    # The artifact shows the highlight a person would see with the mouse over the second line.
    ActionChains(browser).move_to_element(items[1]).perform()
    shot = screenshot(browser, "web-result.png")
    with Image.open(shot) as img:
        assert img.width == 1280


@pytest.mark.browser
def test_non_image_gets_a_readable_error(stack: Stack, browser, tmp_path: Path):
    browser.get(stack.url + "/")
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not a picture\n")
    card = upload(browser, notes)
    assert "failed" in card.get_attribute("class")
    error = by_css(card, ".error")[0]
    assert error.is_displayed() and error.get_attribute("role") == "alert"
    assert by_css(card, ".error-title")[0].text == "This file isn't an image or PDF the service can read"
    # The server's own message, which names the accepted types, is shown under the title.
    assert "image/png" in by_css(card, ".error-detail")[0].text
    screenshot(browser, "web-error.png")


@pytest.mark.browser
def test_drop_several_files_at_once(stack: Stack, browser):
    """Files dropped on the page are read one after another, each on its own card."""
    browser.get(stack.url + "/")
    # A real drop event carrying two files: a canvas-drawn text image and a text file.
    browser.execute_script("""
        const canvas = Object.assign(document.createElement('canvas'), {width: 420, height: 110});
        const ctx = canvas.getContext('2d');
        ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, 420, 110);
        ctx.fillStyle = '#000'; ctx.font = '44px sans-serif'; ctx.fillText('Dropped 512', 24, 70);
        canvas.toBlob((blob) => {
            const dt = new DataTransfer();
            dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
            dt.items.add(new File(['plain words'], 'words.txt', {type: 'text/plain'}));
            for (const type of ['dragenter', 'dragover', 'drop']) {
                document.body.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
            }
        }, 'image/png');
    """)
    WebDriverWait(browser, WAIT_S).until(
        lambda d: len(by_css(d, ".card")) == 2 and all(c.get_attribute("aria-busy") == "false" for c in by_css(d, ".card")))
    first, second = by_css(browser, ".card")
    assert by_css(first, ".card-title")[0].text == "dropped.png"
    assert "done" in first.get_attribute("class")
    assert {"dropped", "512"} <= words(by_css(first, ".fulltext")[0].get_attribute("value"))
    assert "failed" in second.get_attribute("class")
    assert by_css(browser, "#summary")[0].text == "2 files · 1 read · 1 failed"
    assert "dragging" not in by_css(browser, "body")[0].get_attribute("class")


@pytest.mark.browser
def test_too_large_gets_a_readable_error(stack: Stack, browser, tmp_path: Path):
    """Nginx refuses the body (client_max_body_size) before any instance sees it."""
    browser.get(stack.url + "/")
    big = tmp_path / "scan.png"
    with open(big, "wb") as fh:
        fh.truncate(stack.cfg.limits.max_body_bytes + 1)
    card = upload(browser, big)
    assert "failed" in card.get_attribute("class")
    assert by_css(card, ".error-title")[0].text == "This file is too large"
    assert str(stack.cfg.limits.max_body_bytes) in by_css(card, ".error-detail")[0].text


@pytest.mark.browser
def test_annotated_result_is_linked_from_the_page(stack: Stack, browser, page_file: Path):
    browser.get(stack.url + "/")
    by_css(browser, ".options summary")[0].click()
    by_css(browser, "#opt-annotate")[0].click()
    card = upload(browser, page_file)
    link = by_css(card, "a.annotated")[0]
    assert link.is_displayed()
    href = link.get_attribute("href")
    assert re.fullmatch(re.escape(stack.url) + r"/results/[A-Za-z0-9_-]{22}\.png", href), href
    r = http(href)
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"


@pytest.mark.browser
def test_result_downloads_in_every_format(stack: Stack, browser, page_file: Path, tmp_path: Path):
    """Each download button saves that format as a file, as a person's browser would keep it."""
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    browser.get(stack.url + "/")
    card = upload(browser, page_file)
    assert by_css(card, ".downloads")[0].is_displayed()
    # Markdown opens each page with its marker, then the page's title as a heading.
    starts = {"txt": b"Invoice", "md": b"<!-- page 1 -->\n\n# Invoice", "hocr.html": b"<?xml", "alto.xml": b"<?xml",
              "pdf": b"%PDF"}
    types = {"txt": "text/plain", "md": "text/markdown", "hocr.html": "application/xhtml+xml",
             "alto.xml": "application/xml", "pdf": "application/pdf"}
    for button in by_css(card, ".download"):
        ext = button.get_attribute("data-ext")
        button.click()
        saved = tmp_path / f"invoice.{ext}"
        WebDriverWait(browser, WAIT_S).until(lambda _: saved.is_file() and saved.stat().st_size > 0)
        assert button.get_attribute("data-type").startswith(types.pop(ext)), ext
        assert saved.read_bytes().startswith(starts[ext]), (ext, saved.read_bytes()[:40])
    assert not types, f"no button for {sorted(types)}"


def test_results_are_served_and_nothing_else(stack: Stack, page_file: Path):
    body, content_type = multipart([("image", "invoice.png", page_file.read_bytes(), "image/png")])
    r = http(stack.url + "/v1/parse?annotate=1", body, content_type)
    assert r.status == 200, r.body
    image = r.json()["images"][0]
    url = image["annotated_url"]
    result_id = url.removeprefix("/results/").removesuffix(".png")
    assert url.startswith("/results/") and ID_PATTERN.match(result_id)

    got = http(stack.url + url)
    assert got.status == 200
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    with Image.open(io.BytesIO(got.body)) as img:
        assert img.size == (image["width"], image["height"])
    # Without ?annotate=1 nothing is written.
    plain = http(stack.url + "/v1/parse", *multipart([("image", "invoice.png", page_file.read_bytes(), "image/png")]))
    assert "annotated_url" not in plain.json()["images"][0]

    # Only result names are served from the folder: no listing, no other file, no way out of it.
    folder = stack.cfg.results.dir
    (folder / "secret.txt").write_text("not for clients")
    (folder / ".tmp-inflight").write_bytes(got.body)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "x.png").write_bytes(got.body)
    for path in ("/results/", "/results", "/results/secret.txt", "/results/.tmp-inflight",
                 "/results/sub/x.png", "/results/sub", f"/results/{result_id}.PNG",
                 f"/results/{result_id}", "/results/AAAAAAAAAAAAAAAAAAAAAA.png",
                 "/results/..%2fsecret.txt", "/results/%2e%2e/parse.toml"):
        miss = http(stack.url + path)
        assert miss.status == 404, path
        assert miss.json()["error"]["code"] == "not_found", path
    # Read-only: writing to the page or a result is refused, in JSON like every other error.
    for path in ("/", url):
        refused = http(stack.url + path, b"x", "text/plain")
        assert refused.status == 405 and refused.headers["Allow"] == "GET, HEAD", path
        assert refused.json()["error"]["code"] == "method_not_allowed", path


@pytest.mark.browser
def test_busy_service_says_when_to_retry(stack: Stack, browser, page_file: Path):
    """No instance up: Nginx answers 503 with Retry-After; the page holds its retry button that
    long, and the retry succeeds once the instance is back. Last here: it stops the instance."""
    inst = stack.cfg.instances[0]
    deploy.stop_pid(stack.master_pid(inst), signal.SIGTERM, 30)
    try:
        browser.get(stack.url + "/")
        card = upload(browser, page_file)
        assert "failed" in card.get_attribute("class")
        assert by_css(card, ".error-title")[0].text == "The service is busy"
        retry = by_css(card, ".retry")[0]
        assert retry.is_displayed() and not retry.is_enabled()
        assert re.fullmatch(r"Try again in \d+ s", retry.text), retry.text
    finally:
        stack.restart_instance(inst)
    WebDriverWait(browser, 30).until(lambda d: retry.is_enabled())
    retry.click()
    WebDriverWait(browser, WAIT_S).until(lambda d: "done" in card.get_attribute("class"))
    assert not by_css(card, ".error")[0].is_displayed()
    assert len(by_css(card, "svg.overlay polygon")) == len(LINES)


def test_a_pdf_shows_every_page_with_its_boxes(stack: Stack, browser, render, tmp_path: Path):
    from tests import pdfs

    texts = [["FIRST PAGE 101"], ["SECOND PAGE 202", "more text"]]
    path = tmp_path / "two-pages.pdf"
    path.write_bytes(pdfs.scanned_pdf([render(lines) for lines in texts], resolution=200))
    browser.get(stack.url + "/")
    card = upload(browser, path)
    assert "done" in card.get_attribute("class"), card.text
    assert "2 pages" in by_css(card, ".badge")[0].text
    assert by_css(card, ".page-of")[0].text == "Page 1 of 2"
    assert "101" in by_css(card, ".fulltext")[0].get_attribute("value")
    assert len(by_css(card, "svg.overlay polygon")) == 1
    # The page is shown as the server drew it (a browser shows no PDF as an image).
    WebDriverWait(browser, WAIT_S).until(lambda _: browser.execute_script(
        "const i = arguments[0].querySelector('.photo'); return i.complete && i.naturalWidth > 0", card))
    by_css(card, "button.next")[0].click()
    assert by_css(card, ".page-of")[0].text == "Page 2 of 2"
    assert "202" in by_css(card, ".fulltext")[0].get_attribute("value")
    assert len(by_css(card, "svg.overlay polygon")) == len(by_css(card, ".lines .line")) == 2
    assert by_css(card, "button.next")[0].get_attribute("disabled") is not None
    by_css(card, "button.prev")[0].click()
    assert by_css(card, ".page-of")[0].text == "Page 1 of 2"
    assert csp_violations(browser) == []
