"""Each role sees exactly what it should through the real dashboard server (issue 15): the
`emotivoice dashboard` command in a subprocess, headless Chromium, one login per role from the
user file. Two calls of two teams and agents: the pages in the sidebar are the role's, the call
list holds only the calls in the role's scope, and an analyst reads no transcript."""

from __future__ import annotations

import json

import pytest

from browser import (browser_missing, headless_chrome, login, nav_titles, open_page, page_text,
                     start_dashboard_server, stop_dashboard_server, wait_for_text, wait_until_idle)
from emotivoice.dashboard.auth import hash_password
from emotivoice.storage.db import connect
from test_attacks_dashboard import plant_call

pytestmark = [pytest.mark.slow, pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")]
PASSWORD = "correct horse battery"
TITLES = {"live": "Live floor", "review": "Call review", "agents": "Agents", "churn": "Churn risk",
          "audit": "Audit log", "rules": "Rules", "search": "Search"}
USERS = {  # name: (role, teams, agent_id, pages, calls seen)
    "ada": ("admin", [], None, ["live", "review", "agents", "churn", "audit", "rules", "search"],
            {"blue-call", "red-call"}),
    "sue": ("supervisor", ["blue"], None, ["live", "review", "agents", "churn", "search"], {"blue-call"}),
    "cody": ("coach", ["red"], None, ["review", "agents", "search"], {"red-call"}),
    "ann": ("analyst", [], None, ["review", "agents", "churn", "search"], {"blue-call", "red-call"}),
    "al": ("agent", [], "agent-7", ["review", "agents", "search"], {"blue-call"}),
}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    data = tmp_path_factory.mktemp("roles") / "data"
    db = data / "emotivoice.duckdb"
    plant_call(db, "blue-call", "")
    plant_call(db, "red-call", "")
    with connect(db) as con:
        con.execute("UPDATE calls SET team = 'red', agent_id = 'agent-9' WHERE call_id = 'red-call'")
    hashed = hash_password(PASSWORD)
    (data / "dashboard_users.json").write_text(json.dumps(
        {name: {"hash": hashed, "role": role, "teams": teams, "agent_id": agent}
         for name, (role, teams, agent, _, _) in USERS.items()}))
    proc, url = start_dashboard_server(db, {"EMOTIVOICE_DATA_DIR": str(data), "EMOTIVOICE_DASHBOARD_USERS": "",
                                            "EMOTIVOICE_CONFIG": str(data.parent / "none.toml")})
    yield url
    stop_dashboard_server(proc)


@pytest.mark.parametrize("name", list(USERS))
def test_each_role_sees_exactly_its_pages_and_calls(dashboard, name):
    role, _, _, pages, calls = USERS[name]
    driver = headless_chrome()
    try:
        login(driver, dashboard, name, PASSWORD)
        wait_for_text(driver, f"Signed in as {name}")
        wait_until_idle(driver)
        assert sorted(nav_titles(driver)) == sorted(TITLES[p] for p in pages)
        open_page(driver, "Call review")
        for call_id in calls:
            wait_for_text(driver, call_id)
        wait_until_idle(driver)
        text = page_text(driver)
        assert not driver.find_elements("css selector", '[data-testid="stException"]'), text
        for other in {"blue-call", "red-call"} - calls:
            assert other not in text, f"{name} ({role}) sees {other}"
        if role == "analyst":
            assert "My order is late" not in text and "Thank you for calling" not in text
        else:
            wait_for_text(driver, "My order is late")
    finally:
        driver.quit()
