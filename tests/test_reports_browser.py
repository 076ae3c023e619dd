"""The churn page and the admin rules editor as an admin sees them: the real `emotivoice dashboard`
server in headless Chromium over a small real store (tests/test_reports.py's nine calls, moved
into the last three weeks). The screenshots are the ones the README shows.

Needs Debian's chromium and chromium-driver (`python3 launch.py` installs them); skipped with the
reason where they are missing.
"""

from __future__ import annotations

import json
import stat
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from browser import (browser_missing, click_button, headless_chrome, login, open_page, page_text, screenshot,
                     start_dashboard_server, stop_dashboard_server, svg_count, wait_for_text, wait_until,
                     wait_until_idle)
from emotivoice.dashboard.auth import hash_password
from emotivoice.storage.db import connect, save_call
from tests.test_reports import BROKEN, CALLS, REFUND, churn_record

ROOT = Path(__file__).resolve().parent.parent
ADMIN, PASSWORD = "ada", "correct horse battery"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")]


@pytest.fixture
def reports_store(tmp_path):
    """The nine calls, their weeks moved to the last three (the page shows the last 12 weeks), an admin."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dashboard_users.json").write_text(json.dumps({ADMIN: {"hash": hash_password(PASSWORD), "role": "admin",
                                                                   "teams": [], "agent_id": None}}))
    monday = date.today() - timedelta(days=date.today().weekday())
    db = data / "calls.duckdb"
    con = connect(db)
    for call_id, (week, *_rest) in CALLS.items():
        rec = churn_record(call_id)
        rec.call["started_at"] = f"{monday - timedelta(weeks=2 - week)} 10:00:00"
        save_call(con, rec)
    con.close()
    return db, data


def type_at_end(driver, label: str, text: str) -> None:
    """Type `text` at the end of the st.text_area labelled `label`, then leave it (Streamlit commits on blur)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    area = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, f'textarea[aria-label="{label}"]'), 60,
                      f"a text area {label!r}")[0]
    area.click()
    area.send_keys(Keys.CONTROL, Keys.END)
    area.send_keys(text)
    driver.execute_script("arguments[0].blur()", area)
    wait_until_idle(driver)


def test_an_admin_reads_the_churn_reports_and_edits_the_rules(reports_store, tmp_path):
    db, data = reports_store
    shots = ROOT / "docs" / "screenshots"
    proc, url = start_dashboard_server(db, {"EMOTIVOICE_DATA_DIR": str(data)})
    driver = None

    def settled(name: str) -> str:
        wait_until_idle(driver)
        text = page_text(driver)
        assert not driver.find_elements("css selector", '[data-testid="stException"]'), text
        assert "Traceback" not in text
        screenshot(driver, tmp_path / f"{name}.png")
        screenshot(driver, shots / f"{name}.png")
        return text

    try:
        driver = headless_chrome(1600, 2300)
        login(driver, url, ADMIN, PASSWORD)
        wait_for_text(driver, f"Signed in as {ADMIN}")
        open_page(driver, "Churn risk")
        for seen in ("Churn over weeks", "Top reasons behind calls at risk", "Customers most at risk", "cust-1",
                     "+4412", "crm-9", "caller number", "customer negative at the end", "cancellation intent",
                     "Export customers CSV"):
            wait_for_text(driver, seen)
        wait_until(lambda: svg_count(driver) >= 6, 30, "the trend and the reasons charts")
        settled("churn-reports")  # (table headers are drawn on a canvas: the screenshot shows them in words)

        open_page(driver, "Rules")
        wait_for_text(driver, "In use: the shipped default set")
        type_at_end(driver, "Rules (TOML)", BROKEN)
        click_button(driver, "Validate")
        wait_for_text(driver, "Not usable: rules.toml: category 'refund talk' condition 1: unknown key 'phrasez'")
        click_button(driver, "Save")
        wait_for_text(driver, "Not saved: rules.toml: category 'refund talk'")
        target = data / "rules.toml"
        assert not target.exists()
        click_button(driver, "Reload from file")
        type_at_end(driver, "Rules (TOML)", REFUND)
        click_button(driver, "Save")
        wait_for_text(driver, f"Saved to {target}")
        assert "refund talk" in target.read_text() and stat.S_IMODE(target.stat().st_mode) == 0o600
        click_button(driver, "Re-run rules on stored calls")
        wait_for_text(driver, "9 call(s) re-categorised", timeout=90)
        settled("rules-editor")
    finally:
        if driver is not None:
            driver.quit()
        stop_dashboard_server(proc)
    with duckdb.connect(str(db), read_only=True) as con:
        categories = dict(con.execute("SELECT call_id, categories FROM calls").fetchall())
        actions = [r[0] for r in con.execute("SELECT action FROM audit_log WHERE user_name = ?", [ADMIN]).fetchall()]
    assert "refund talk" in categories["c2"] and "refund talk" not in categories["c1"]
    assert {"sign_in", "rules_save", "rules_run"} <= set(actions)
