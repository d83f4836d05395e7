"""Helpers for the headless-Chromium tests: a live server in a thread and a browser.

Chromium and its driver come from the system (Debian: ``apt-get install chromium
chromium-driver``). Without them the browser tests are skipped, unless
``PATRON_REQUIRE_BROWSER=1`` (CI) makes that a failure. Set ``PATRON_SCREENSHOT_DIR`` to keep
the screenshots the tests take. A test module imports ``live_server_fixture`` and
``browser_fixture`` to use the ``live_server`` and ``browser`` fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PATRON_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PATRON_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-dev-shm-usage",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--window-size=1366,900", "--lang=zh-CN")


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return path
    return None


def require_browser() -> None:
    missing = _missing()
    if missing is None:
        return
    message = f"headless browser tests need {missing} (apt-get install chromium chromium-driver)"
    if os.environ.get("PATRON_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="live_server")
def live_server_fixture(db_url: str, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app under uvicorn on a free 127.0.0.1 port, against the test database."""
    require_browser()
    import uvicorn

    from patron.app import create_app
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_DATABASE_URL", db_url)
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    get_settings.cache_clear()


@pytest.fixture(name="browser")
def browser_fixture() -> Iterator[object]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="patron-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: object, css: str, *, timeout: float = 10.0) -> object:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(  # type: ignore[arg-type]
        ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def sign_in(driver: object, base: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/")  # type: ignore[attr-defined]
    wait_for(driver, "#login-form")
    driver.find_element(By.NAME, "username").send_keys(username)  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "password").send_keys(password)  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR,  # type: ignore[attr-defined]
                        "#login-form button[type=submit]").click()
    wait_for(driver, "#logout")


def screenshot(driver: object, tmp_path: Path, name: str) -> Path:
    """Full-page screenshot (kept only where PATRON_SCREENSHOT_DIR points)."""
    height = driver.execute_script(  # type: ignore[attr-defined]
        "return document.documentElement.scrollHeight")
    metrics = {"width": 1366, "height": max(900, min(int(height), 3000)),
               "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # type: ignore
    folder = Path(os.environ.get("PATRON_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore
    return path
