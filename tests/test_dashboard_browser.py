"""The dashboard as a person sees it: the real `emotivoice dashboard` server in headless Chromium.

Needs Debian's chromium and chromium-driver (`python3 launch.py` installs them, so CI runs this);
skipped with the reason where they are missing. The screenshot it takes is the one the README shows.
"""

from pathlib import Path

import duckdb
import pytest

from browser import (LoginFailed, browser_missing, headless_chrome, login, open_page, page_text, screenshot,
                     start_dashboard_server, stop_dashboard_server, svg_count, wait_for_text, wait_until,
                     wait_until_idle)
from emotivoice.dashboard.auth import hash_password

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "sam", "correct horse battery"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")]


@pytest.fixture
def analysed_store(demo_analysis, tmp_path):
    """The really analysed demo call, with what a recording system tells about it."""
    import shutil

    db = tmp_path / "calls.duckdb"
    shutil.copy(demo_analysis[0], db)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE calls SET started_at = now()::TIMESTAMP - INTERVAL 1 HOUR, agent_id = 'agent-7', "
                    "customer_id = 'cust-1', team = 'blue'")
        call_id = con.execute("SELECT call_id FROM calls").fetchone()[0]
    return db, call_id


def test_supervisor_logs_in_and_works_through_every_page(analysed_store, tmp_path):
    db, call_id = analysed_store
    env = {"EMOTIVOICE_DATA_DIR": str(tmp_path),  # no users file but this test's
           "EMOTIVOICE_DASHBOARD_USERS": f"{USER}:{hash_password(PASSWORD)}"}
    shots = ROOT / "docs" / "screenshots"

    def settle_and_check(name: str, *seen: str, charts: int = 0) -> None:
        for text in seen:
            wait_for_text(driver, text)
        if charts:
            wait_until(lambda: svg_count(driver) >= charts, 30, f"{charts} plotly chart SVGs")
        wait_until_idle(driver)
        text = page_text(driver)
        assert not driver.find_elements("css selector", '[data-testid="stException"]'), text
        assert "Traceback" not in text
        screenshot(driver, tmp_path / f"{name}.png")
        screenshot(driver, shots / f"{name}.png")

    proc, url = start_dashboard_server(db, env)
    driver = None
    try:
        driver = headless_chrome()
        with pytest.raises(LoginFailed, match="Wrong username or password"):
            login(driver, url, USER, "not the password")
        assert call_id not in page_text(driver)  # nothing from the store before login

        login(driver, url, USER, PASSWORD)
        wait_for_text(driver, f"Signed in as {USER}")
        settle_and_check("live-floor", "1 open alert", call_id, "Acknowledge", charts=2)
        # A new alert stored while the page is open appears without the page reloading as a whole.
        driver.execute_script("window.__still_this_page = true;")
        from emotivoice.storage.db import connect

        with connect(db, wait_s=10) as con:  # the dashboard reads this file every 1.5 s: take turns
            con.execute("INSERT INTO alerts (call_id, speaker, t_s, kind, score, factors, utterance_idx) "
                        "VALUES (?, 'customer', 41.5, 'escalation', 0.71, '{\"escalation phrase: manager\": 2.0}', 11)",
                        [call_id])
        wait_for_text(driver, "2 open alerts", timeout=30)
        assert driver.execute_script("return window.__still_this_page === true;")
        assert "escalation phrase: manager" in page_text(driver)
        open_page(driver, "Call review")
        settle_and_check("call-review", call_id, "Escalation risk", "Transcript", "Coach feedback", charts=3)
        # the customer's shouted line, as Whisper writes it ("11" or "eleven", both right)
        assert any(f"It's {n} o'clock!" in page_text(driver) for n in ("11", "eleven"))
        open_page(driver, "Agents")
        settle_and_check("agents", "Coaching opportunities", "agent-7", charts=4)
        open_page(driver, "Churn risk")
        settle_and_check("churn-risk", "Calls at risk", call_id, "Export CSV")
    finally:
        if driver is not None:
            driver.quit()
        stop_dashboard_server(proc)
