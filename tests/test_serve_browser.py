"""The page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium) against
a real `i2vgen serve` on a free loopback port. Upload a picture, type a prompt, press Generate, watch the progress
bar and the preview move, see the video load and play, download it. A screenshot of the finished page is saved in
the test's folder, and as docs/ui.png where that is missing or I2VGEN_UPDATE_SCREENSHOT=1 (so that a test run does not
rewrite a tracked file every time)."""

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no Chromium: `apt-get install chromium chromium-driver` (Debian) to run the browser test "
                "(.ci/run does this where it runs as root)", allow_module_level=True)
pytest.importorskip("selenium", reason="the browser test drives Chromium with selenium (the test extra)")
pytest.importorskip("gradio", reason="the page needs the ui extra: pip install -e '.[ui]'")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from test_serve import SAMPLE, free_port, start_server, wait_healthy

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui.png"
PROMPT = "a red circle moves right"
STEPS, FRAMES = 30, 8  # enough steps for the bar to be seen moving on a fast machine too


def chromium(downloads: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def wait_until(fn, timeout: float, what: str):
    t_end = time.time() + timeout
    while time.time() < t_end:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fill(driver: webdriver.Chrome, css: str, text: str) -> None:
    # gradio renders its components one by one: the upload box can be there before the prompt box is
    box = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, css), 30, css)[0]
    box.clear()
    box.send_keys(text)


def test_page_uploads_generates_shows_progress_plays_and_downloads(tmp_path):
    from i2vgen.io import probe_video

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(tmp_path / "data", port, "--preview-interval", "0")
    driver = None
    try:
        wait_healthy(url, proc, timeout=120)
        driver = chromium(downloads)
        driver.get(url + "/")
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#image input[type=file]"), 60, "the page")
        driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(SAMPLE))
        fill(driver, "#prompt textarea", PROMPT)
        fill(driver, "#steps input", str(STEPS))
        fill(driver, "#frames input", str(FRAMES))
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#image img"), 20, "the uploaded picture")
        wait_until(lambda: driver.find_elements(By.ID, "generate"), 30, "the Generate button")[0].click()

        # the progress bar and the preview while it samples
        steps, previews, state = [], set(), None
        t_end = time.time() + 120
        while state not in ("done", "failed", "cancelled"):
            assert time.time() < t_end, f"the job did not finish (last state {state}, steps {steps})"
            # state, stage and value read in one script: read one by one, the bar could turn "done" (value 1)
            # between the reads and a running base stage would seem to go back to step 1
            bar = driver.execute_script("""const b = document.getElementById('job-progress');
                return b && [b.dataset.state, b.dataset.stage, b.getAttribute('value')];""")
            if bar:
                state = bar[0]
                if state == "running" and bar[1] == "base":
                    value = int(bar[2])
                    if not steps or steps[-1] != value:
                        steps.append(value)
                    previews.update(i.get_attribute("src") for i in driver.find_elements(By.CSS_SELECTOR,
                                                                                         "#preview img"))
            time.sleep(0.05)
        assert state == "done", driver.find_element(By.ID, "job-stage").text
        assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] > steps[0], steps  # the bar moved
        assert previews, "no preview was shown while sampling"
        assert f"of {STEPS}" in driver.find_element(By.ID, "job-stage").text or "done" in \
            driver.find_element(By.ID, "job-stage").text

        # the video loads and plays
        video = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#video video[src]"), 30, "the video")[0]
        wait_until(lambda: driver.execute_script("return arguments[0].readyState", video) >= 2, 30,
                   "the video to load")
        played = driver.execute_async_script("""
            const [v, done] = arguments; let updates = 0;
            v.addEventListener('timeupdate', () => { if (++updates == 3) done({ok: true, t: v.currentTime}); });
            v.play().catch(e => done({ok: false, error: String(e)}));
            setTimeout(() => done({ok: false, updates, paused: v.paused, error: v.error && v.error.code}), 8000);
        """, video)
        assert played["ok"], played
        assert driver.execute_script("return arguments[0].duration", video) == pytest.approx(FRAMES / 8, abs=0.2)
        info = driver.find_element(By.ID, "info").text
        assert "seed" in info and "done" in info

        # download it
        driver.find_element(By.ID, "download").click()
        mp4 = wait_until(lambda: [p for p in downloads.iterdir() if p.suffix == ".mp4"], 30, "the download")[0]
        wait_until(lambda: not any(p.suffix == ".crdownload" for p in downloads.iterdir()), 30, "the download")
        meta = probe_video(mp4)
        assert (meta.num_frames, meta.width, meta.height) == (FRAMES, 32, 32)
        driver.save_screenshot(str(tmp_path / "ui.png"))
        if os.environ.get("I2VGEN_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists():
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(tmp_path / "ui.png", SCREENSHOT)

        # the gallery lists it (read from the store), also on a fresh load of the page
        driver.get(url + "/")
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#gallery img"), 30, "the gallery")
        driver.find_element(By.CSS_SELECTOR, "#gallery img").click()
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#video video[src]"), 30, "the gallery's video")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(30)
    assert os.path.getsize(tmp_path / "ui.png") > 10_000
