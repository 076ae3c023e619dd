"""The Search page in a real browser: the really analysed demo call is searched for a sentence said
in it, and the hit's link opens the call review at that moment (issue 16).

Needs Debian's chromium and chromium-driver (`python3 launch.py` installs them); skipped with the
reason where they are missing. Its screenshot is the one the README shows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from browser import (_type, browser_missing, headless_chrome, login, open_page, page_text, screenshot,
                     start_dashboard_server, stop_dashboard_server, wait_for_text, wait_until, wait_until_idle)
from conftest import DEMO_TRUTH
from emotivoice.dashboard.auth import hash_password

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "sam", "correct horse battery"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")]


def test_a_search_hit_opens_the_review_at_that_moment(demo_analysis, tmp_path):
    from selenium.webdriver.common.by import By

    db = tmp_path / "calls.duckdb"
    shutil.copy(demo_analysis[0], db)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE calls SET started_at = now()::TIMESTAMP - INTERVAL 1 HOUR, agent_id = 'agent-7', "
                    "team = 'blue'")
        call_id = con.execute("SELECT call_id FROM calls").fetchone()[0]
    said = next(t for t in DEMO_TRUTH["turns"] if t["text"] == "I would like a new alarm clock.")
    at = f"0:{int(said['start']):02d}"
    env = {"EMOTIVOICE_DATA_DIR": str(tmp_path), "EMOTIVOICE_DASHBOARD_USERS": f"{USER}:{hash_password(PASSWORD)}"}
    proc, url = start_dashboard_server(db, env)
    driver = None
    try:
        driver = headless_chrome()
        login(driver, url, USER, PASSWORD)
        open_page(driver, "Search")
        _type(driver, "Search transcripts", '"alarm clock"')
        wait_for_text(driver, f"{call_id} at {at}")
        wait_until_idle(driver)
        text = page_text(driver)
        assert "1 hit, best first" in text and "alarm clock" in text.lower(), text
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text
        screenshot(driver, ROOT / "docs" / "screenshots" / "search.png")

        link = wait_until(lambda: [a for a in driver.find_elements(By.CSS_SELECTOR, "a")
                                   if f"{call_id} at {at}" in a.text], 30, "the hit's link")[0]
        assert f"call={call_id}" in link.get_attribute("href") and "t=" in link.get_attribute("href")
        link.click()
        wait_for_text(driver, f"Opened at {at}")
        wait_for_text(driver, "Transcript")
        wait_until_idle(driver)
        text = page_text(driver)
        assert "alarm clock" in text.lower() and "Call review" in text, text
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text
        screenshot(driver, tmp_path / "review-at-hit.png")
    finally:
        if driver is not None:
            driver.quit()
        stop_dashboard_server(proc)
