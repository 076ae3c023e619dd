"""Helpers for end-to-end dashboard tests in a real browser: the real server, headless Chromium.

Not a test module: tests import it (`from browser import ...`, tests/ is on sys.path like
test_storage). It drives the dashboard as a person does: the `emotivoice dashboard` command in a
subprocess, Debian's Chromium through Debian's chromedriver, clicks and typed text.

Nothing is downloaded at run time: Selenium gets the driver path explicitly (so Selenium Manager
never runs) and SE_OFFLINE=true stops it should anything still ask. `python3 launch.py` installs
the `chromium` and `chromium-driver` packages; without them `browser_missing()` says why and
tests skip.

Selectors are those of the Streamlit 1.67 frontend (streamlit/static/static/js/index.*.js):
  - navigation links:  a[data-testid="stSidebarNavLink"] (sidebar) / a[data-testid="stTopNavLink"]
                       (position="top"); the active one has aria-current="page"; a page icon
                       shows as a line of its own before the title ("🎧\\nCall review");
                       button[data-testid="stSidebarNavViewButton"] expands a long list ("View N more")
  - text/password inputs: input[data-testid="stTextInputField"][aria-label="<label>"]
  - buttons:  <button data-testid="stBaseButton-<kind>"> (kind: secondary, primary,
              secondaryFormSubmit, ...) whose visible text is the label
  - a rerun in progress: [data-testid="stStatusWidgetRunningIcon"], [data-stale="true"] on
    element containers, [data-testid="stSkeleton"] while a page loads
  - st.error / st.warning / ...: [data-testid="stAlertContentError"] / stAlertContentWarning / ...
  - uncaught exceptions: [data-testid="stException"]
  - plotly charts: [data-testid="stPlotlyChart"] .js-plotly-plot svg.main-svg (3 per chart)
  - st.dataframe cells: drawn on a canvas; the rows in view are mirrored into hidden
    [data-testid="glide-cell-COL-ROW"] cells, which page_text() reads
  - st.selectbox: its choice is the value of input[role="combobox"][aria-label="<label>"]
  - st.html: [data-testid="stHtml"]; the review page's player is the <audio> inside it
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
URL_PREFIX = "EmotiVoice dashboard: "

NAV_LINKS = '[data-testid="stSidebarNavLink"], [data-testid="stTopNavLink"]'
BUSY = '[data-testid="stStatusWidgetRunningIcon"], [data-stale="true"], [data-testid="stSkeleton"]'
PLOTLY_SVG = ".js-plotly-plot svg.main-svg"
ERROR_ALERT = '[data-testid="stAlertContentError"]'

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never go to the network


def browser_missing() -> str | None:
    """Why browser tests cannot run here, or None when Chromium, chromedriver and Selenium are there."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.is_file():
            return f"{binary} not found: install the Debian package {package} (python3 launch.py does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]' (python3 launch.py does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard_server(db_path: Path, env: dict | None = None,
                           timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """Start `python -m emotivoice.app dashboard --db DB --port FREE` as a user would.

    `env` is added to this process's environment (e.g. the dashboard login credentials).
    Returns the process and the URL it printed ("EmotiVoice dashboard: URL"; a busy port falls
    back to another, so the printed URL is the truth) once URL/_stcore/health answers 200.
    The command runs in its own session so that stop_dashboard_server() ends it and the
    Streamlit process it starts together. Its output is kept in `proc.output_lines`.
    """
    cmd = [sys.executable, "-m", "emotivoice.app", "dashboard", "--db", str(db_path), "--port", str(_free_port())]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    proc.output_lines = lines  # type: ignore[attr-defined]
    announced = threading.Event()

    def drain() -> None:  # read all output so the pipe never fills and blocks the server
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(URL_PREFIX):
                announced.set()

    threading.Thread(target=drain, daemon=True, name="dashboard-output").start()
    deadline = time.monotonic() + timeout
    try:
        while not announced.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dashboard did not print its URL:\n" + "\n".join(lines))
        url = next(line for line in lines if line.startswith(URL_PREFIX))[len(URL_PREFIX):].strip()
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard at {url} did not become healthy:\n" + "\n".join(lines))
            time.sleep(0.3)
    except BaseException:
        stop_dashboard_server(proc)
        raise


def stop_dashboard_server(proc: subprocess.Popen, timeout: float = 10) -> None:
    """End the dashboard command and the Streamlit server it started (its whole process group).

    Terminating only the command would leave its Streamlit child serving on the port.
    """
    if proc.poll() is None or _group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.1)
        if _group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait(timeout)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _has_live_member(pgid)  # the leader may be a zombie until reaped: look at the members


def _has_live_member(pgid: int) -> bool:
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


def headless_chrome(width: int = 1600, height: int = 1200):
    """Debian's Chromium, headless, driven by Debian's chromedriver (no Selenium Manager)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--disable-gpu", "--no-first-run", "--no-default-browser-check"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


# Text a person reads that WebElement.text leaves out: st.dataframe draws its cells on a canvas
# (glide-data-grid) and mirrors the rows in view into visually hidden cells glide-cell-COL-ROW;
# st.selectbox shows its choice as the value of an <input role="combobox">; text inputs show
# their value. Password values are left out.
_HIDDEN_TEXT_JS = """
const cells = [...document.querySelectorAll('[data-testid^="glide-cell-"]')].map(c => c.textContent);
const values = [...document.querySelectorAll('input')]
    .filter(i => i.type !== 'password' && i.type !== 'hidden' && i.value).map(i => i.value);
return cells.concat(values).join('\\n');
"""


def page_text(driver) -> str:
    """The page's text as a person reads it: the visible text, then data-grid cells and input values."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text + "\n" + (driver.execute_script(_HIDDEN_TEXT_JS) or "")
    except (StaleElementReferenceException, WebDriverException):
        return ""


def wait_until(condition, timeout: float = 60, message: str = "condition", poll: float = 0.25):
    """Poll `condition()` until it returns something truthy (returned); TimeoutError after `timeout` s."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except StaleElementReferenceException:  # Streamlit re-rendered under us: look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(poll)


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    """Wait until the page's text (see page_text) contains `text` (Streamlit renders asynchronously)."""
    try:
        wait_until(lambda: text in page_text(driver), timeout, f"{text!r} on the page")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; the page shows:\n{page_text(driver)[:2000]}") from None


def wait_until_idle(driver, timeout: float = 60, settle: float = 0.5) -> None:
    """Wait until no script run is in progress: no running icon, stale element or skeleton for `settle` s."""
    from selenium.webdriver.common.by import By

    quiet_since = [None]

    def idle() -> bool:
        if driver.find_elements(By.CSS_SELECTOR, BUSY):
            quiet_since[0] = None
            return False
        quiet_since[0] = quiet_since[0] or time.monotonic()
        return time.monotonic() - quiet_since[0] >= settle

    wait_until(idle, timeout, "the dashboard to finish running", poll=0.1)


def _buttons(driver, label: str) -> list:
    from selenium.webdriver.common.by import By

    return [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == label and b.is_displayed()]


def _input(driver, label: str):
    from selenium.webdriver.common.by import By

    selector = f'input[aria-label="{label}"]'
    return wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, selector), 60, f"an input labelled {label!r}")[0]


def _type(driver, label: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = _input(driver, label)
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(value)
    # Streamlit commits a text input's value when focus leaves the widget (or on Enter, which would
    # submit a form half-filled). TAB is not enough for a password: it lands on the field's own
    # "Show password" button, still inside the widget, and nothing is committed. Leave the field the
    # way a click elsewhere on the page does, then let the rerun that the commit starts finish.
    driver.execute_script("arguments[0].blur()", field)
    wait_until_idle(driver)


class LoginFailed(AssertionError):
    """The login form stayed, showing an error (e.g. wrong password)."""


def login(driver, url: str, user: str, password: str, timeout: float = 60) -> None:
    """Open `url`, fill the login form ("Username", "Password") and click "Log in".

    Returns once the "Log in" button is gone and the page has rendered. Raises LoginFailed with the
    page's text as soon as the form answers with an error (st.error) instead, and TimeoutError when
    it neither lets in nor says why within `timeout` s.
    """
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_until(lambda: _buttons(driver, "Log in"), timeout, 'the "Log in" button')
    _type(driver, "Username", user)
    _type(driver, "Password", password)
    wait_until(lambda: _buttons(driver, "Log in"), timeout, 'the "Log in" button')[0].click()
    wait_until_idle(driver, timeout)

    def outcome() -> str | None:
        if not _buttons(driver, "Log in"):
            return "in"
        if driver.find_elements(By.CSS_SELECTOR, ERROR_ALERT) and not driver.find_elements(By.CSS_SELECTOR, BUSY):
            return "refused"
        return None

    try:
        result = wait_until(outcome, timeout, 'the "Log in" button to go away')
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; the page shows:\n{page_text(driver)[:2000]}") from None
    if result == "refused":
        raise LoginFailed(f"login as {user!r} refused; the page shows:\n{page_text(driver)[:2000]}")
    wait_until_idle(driver, timeout)


def _nav_title(link) -> str:
    """A link's title: its text without the page icon (an emoji or icon name on a line of its own)."""
    lines = link.text.strip().splitlines()
    return lines[-1].strip() if lines else ""


def nav_titles(driver) -> list[str]:
    """Titles of the navigation links shown (sidebar or top), in order, without their icons."""
    from selenium.webdriver.common.by import By

    return [_nav_title(a) for a in driver.find_elements(By.CSS_SELECTOR, NAV_LINKS)]


def open_page(driver, title: str, timeout: float = 60) -> None:
    """Click the navigation link titled `title` and wait until that page is current and rendered."""
    from selenium.webdriver.common.by import By

    def link():
        found = [a for a in driver.find_elements(By.CSS_SELECTOR, NAV_LINKS) if _nav_title(a) == title]
        if not found:  # a long page list shows "View N more" first
            for more in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavViewButton"]'):
                if "more" in more.text:
                    more.click()
        return found

    try:
        wait_until(link, timeout, f"a navigation link {title!r}")[0].click()
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; links shown: {nav_titles(driver)}") from None
    wait_until(lambda: any(a.get_attribute("aria-current") == "page" for a in link()), timeout,
               f"page {title!r} to become current")
    wait_until_idle(driver, timeout)


def choose(driver, label: str, option: str, timeout: float = 60) -> None:
    """Pick `option` in the st.selectbox labelled `label` (typed, then Enter) and wait for the rerun."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    selector = f'input[role="combobox"][aria-label="{label}"]'
    box = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, selector), timeout, f"a selectbox {label!r}")[0]
    box.click()
    box.send_keys(option)
    box.send_keys(Keys.ENTER)
    wait_until(lambda: driver.find_element(By.CSS_SELECTOR, selector).get_attribute("value") == option, timeout,
               f"{option!r} chosen in {label!r}")
    wait_until_idle(driver, timeout)


def click_button(driver, label: str, timeout: float = 60) -> None:
    """Click the visible button whose text is `label` and wait for the rerun it starts."""
    wait_until(lambda: _buttons(driver, label), timeout, f"a {label!r} button")[0].click()
    wait_until_idle(driver, timeout)


def screenshot(driver, path: Path) -> Path:
    """Save the browser window as a PNG (folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"could not save a screenshot to {path}")
    return path


def svg_count(driver) -> int:
    """How many plotly chart SVGs are rendered on the page."""
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, PLOTLY_SVG))
