"""/docs, /redoc and /demo in a real headless Chromium (Debian's `chromium` + `chromium-driver`), with
every host but loopback unresolvable: a page that needs a CDN fails here.

`.ci/run` installs the browser when it is missing; outside CI the tests skip without it. Screenshots
go to the test's tmp_path, or to $TEST_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.reliability_support import audio_file, serve_in_thread

pytestmark = pytest.mark.slow


def _browser_paths() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone plays: 2 s of a voice-like tone, 48 kHz 16-bit mono."""
    rate = 48_000
    t = np.arange(2 * rate) / rate
    voice = (
        0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 3 * t)) * t) * (0.6 + 0.4 * np.sin(np.pi * t))
    )
    path = tmp_path_factory.mktemp("mic") / "microphone.wav"
    path.write_bytes(audio_file(voice, rate))
    return path


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[Any]:
    browser_path, driver_path = _browser_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach for a download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # offline but for loopback
        "--use-fake-ui-for-media-stream",  # grant the microphone
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def service(make_settings: Callable[..., Any]) -> Iterator[str]:
    from app.main import create_app

    with serve_in_thread(create_app(make_settings())) as url:
        yield url


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def wait(driver: Any, condition: Callable[[Any], Any], timeout_s: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition)


def loaded_urls(driver: Any) -> list[str]:
    """What the page got answers from. A request the page's CSP blocked (Redoc's footer logo) is listed
    by Chrome with status 0 and no bytes: never sent, so not counted."""
    urls: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.responseStatus > 0 || e.transferSize > 0).map(e => e.name).concat([location.href])"
    )
    return urls


def visible(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]


def test_swagger_ui_and_redoc_render_offline(browser: Any, service: str, tmp_path: Path) -> None:
    browser.get(service + "/docs")
    title = wait(browser, lambda d: visible(d, ".swagger-ui .info .title"))[0]
    assert "LPGNet" in title.text
    paths = wait(browser, lambda d: visible(d, ".opblock-summary-path"))
    assert "/conversations/{conversation_id}/utterances" in {p.text.replace("\u200b", "") for p in paths}
    screenshot(browser, tmp_path, "docs")
    assert all(url.startswith(service) for url in loaded_urls(browser)), loaded_urls(browser)

    browser.get(service + "/redoc")
    heading = wait(browser, lambda d: [h for h in visible(d, "h1") if "LPGNet" in h.text])[0]
    assert heading.is_displayed()
    assert wait(browser, lambda d: [e for e in visible(d, "h2") if "utterance" in e.text.lower()])
    screenshot(browser, tmp_path, "redoc")
    assert all(url.startswith(service) for url in loaded_urls(browser)), loaded_urls(browser)


def test_demo_scores_a_typed_and_a_recorded_utterance(browser: Any, service: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(service + "/demo")
    conversation = wait(browser, lambda d: d.find_element(By.ID, "conversation").get_attribute("value"))
    for element_id in ("transcript", "send", "record", "timeline", "new-conversation"):
        assert browser.find_element(By.ID, element_id).is_displayed(), element_id

    browser.find_element(By.ID, "transcript").send_keys("Why did nobody call me back?")
    browser.find_element(By.ID, "send").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#answers li.answer")) == 1)

    browser.find_element(By.ID, "record").click()  # the fake microphone plays the generated WAV
    wait(browser, lambda d: d.find_element(By.ID, "record").text.startswith("■"))
    import time

    time.sleep(1.5)
    browser.find_element(By.ID, "record").click()
    answers = wait(
        browser, lambda d: (a := d.find_elements(By.CSS_SELECTOR, "#answers li.answer")) and len(a) == 2 and a
    )
    status = browser.find_element(By.ID, "status")
    assert "error" not in (status.get_attribute("class") or ""), status.text
    assert "text" in answers[0].text and "audio" in answers[1].text
    lines = browser.find_elements(By.CSS_SELECTOR, "#timeline polyline")
    assert len(lines) == 4  # one per label of the tiny checkpoint
    assert len(browser.find_elements(By.CSS_SELECTOR, "#legend span")) == 4
    screenshot(browser, tmp_path, "demo")
    assert all(url.startswith(service) for url in loaded_urls(browser)), loaded_urls(browser)

    stored = httpx.get(f"{service}/conversations/{conversation}").json()
    assert [u["modalities"] for u in stored["utterances"]] == [["text"], ["audio"]]
    assert all(u["prediction"] is not None for u in stored["utterances"])
