"""``t2l ui`` in a real browser: headless Debian Chromium driven by Selenium.

Starts ``t2l ui`` on a tiny model, types a description, clicks Generate, sends a
message and checks that the base and the adapted replies both appear; clicks the
bare-input example and checks the same in one click. Set
``T2L_UI_SCREENSHOT=docs/ui.png`` to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from _serve_utils import free_port, tiny_generator

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                "chromium-driver)")


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
            time.sleep(0.3)


@pytest.fixture
def ui_url(tmp_path):
    base, gen = tiny_generator(tmp_path)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "text2lora.cli", "ui", "--model", str(tmp_path / "gen"),
                             "--port", str(port), "--default-max-tokens", "16"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, proc)
        yield url, base, gen
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1150"]:
        opts.add_argument(a)
    profile = tempfile.mkdtemp(prefix="t2l-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _bot_replies(driver, elem_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} [data-testid='bot']")]


def _alnum(text: str) -> str:
    """Letters and digits only: what survives Markdown rendering unchanged."""
    return "".join(c for c in text if c.isalnum())


def _replied(want_base: str, want_ad: str):
    """A wait condition: one reply in each pane, each the given one (an empty reply shows as a note)."""

    def complete(d) -> bool:
        b, a = _bot_replies(d, "chat-base"), _bot_replies(d, "chat-adapted")
        if len(b) != 1 or len(a) != 1:
            return False
        return _alnum(a[0]) == _alnum(want_ad) and (
            b[0] == "(empty reply)" if not want_base.strip() else _alnum(b[0]) == _alnum(want_base))

    return complete


def test_generate_then_chat_with_base_and_adapted_side_by_side(ui_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from text2lora.serve.chat import chat

    ui_url, base, gen = ui_url

    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    browser.get(ui_url)
    desc = "Answer arithmetic questions with a single number."
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#description textarea"))
    box.send_keys(desc)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "Active adapter" in d.find_element(By.ID, "adapter-info").text)
    info = browser.find_element(By.ID, "adapter-info").text
    assert desc in info and "t2l-" in info and " ms" in info
    assert browser.find_element(By.CSS_SELECTOR, "#download").is_enabled()

    msg = "What is 2 + 3?"
    want_base = chat(base, msg, None, max_new_tokens=16)  # what the UI's two panes must show
    want_ad = chat(base, msg, gen.generate(desc), max_new_tokens=16)
    assert _alnum(want_ad) and want_ad != want_base
    browser.find_element(By.CSS_SELECTOR, "#message textarea").send_keys(msg)
    browser.find_element(By.ID, "send").click()
    wait.until(_replied(want_base, want_ad))  # both replies streamed in, each the one its model gives alone
    assert "What is 2 + 3?" in browser.find_element(By.ID, "chat-base").text
    assert "What is 2 + 3?" in browser.find_element(By.ID, "chat-adapted").text

    shot = Path(os.environ.get("T2L_UI_SCREENSHOT") or tmp_path / "ui.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_bare_input_example_answers_with_and_without_the_adapter_in_one_click(ui_url, browser):
    """The README's first example in the page: one click on a bare review generates the adapter for the
    description and shows the base's and the adapted model's replies to the review alone."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from text2lora.serve.chat import chat
    from text2lora.serve.ui import BARE_DESCRIPTION, BARE_INPUTS

    ui_url, base, gen = ui_url
    review = BARE_INPUTS[0]
    want_base = chat(base, review, None, max_new_tokens=16)
    want_ad = chat(base, review, gen.generate(BARE_DESCRIPTION), max_new_tokens=16)
    assert _alnum(want_ad) and want_ad != want_base

    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    browser.get(ui_url)
    assert BARE_DESCRIPTION in wait.until(lambda d: d.find_element(By.ID, "bare-intro")).text
    example = wait.until(lambda d: d.find_element(
        By.XPATH, f"//*[@id='bare-examples']//*[self::button or self::td][contains(., '{review[:30]}')]"))
    assert _bot_replies(browser, "chat-base") == [] and "No adapter yet" in browser.find_element(
        By.ID, "adapter-info").text
    example.click()
    wait.until(_replied(want_base, want_ad))
    assert BARE_DESCRIPTION in browser.find_element(By.ID, "adapter-info").text
    assert browser.find_element(By.CSS_SELECTOR, "#description textarea").get_attribute("value") == BARE_DESCRIPTION
    for pane in ("chat-base", "chat-adapted"):
        assert review in browser.find_element(By.ID, pane).text
        assert BARE_DESCRIPTION not in browser.find_element(By.ID, pane).text  # the message is the review alone
