"""EmotiVoice supervisor dashboard: sign in, then the live floor, call reviews, agent trends and
churn risk. Every page reads through storage.store (the service that owns the DuckDB file when
one runs, the file itself otherwise), so it shows live data without ever locking the writer.

Signing in goes through dashboard.auth.sign_in (throttled per user name and per client address,
shared by every session of this server). A sign-in opens a server-side session
(dashboard/sessions.py) whose token reaches the browser only as an HttpOnly cookie, set by
POSTing a one-time ticket to /api/session; a reload finds the cookie and the session goes on
until it expires or the user logs out. Every run re-checks the session, so a log-out elsewhere
or an expiry ends this page too.

Each user sees only the pages of their role (common.PAGES; the role comes from the user file),
and every read and write goes to the store as that user, which limits and audits it
(storage/access.py) whatever a page asks. A sign-in is recorded in the audit log.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import streamlit as st

from emotivoice.dashboard.auth import load_users, sign_in
from emotivoice.dashboard.common import PAGES, client_address, db_path, role, settings
from emotivoice.dashboard.sessions import COOKIE, REGISTRY

log = logging.getLogger(__name__)

# Not "pages/": a folder of that name beside the main script switches Streamlit to its v1 page
# discovery, which runs a page's script straight from its URL without this script's sign-in.
VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="EmotiVoice", page_icon="🎧", layout="wide")


def post_from_page(path: str, body: str = "") -> None:
    """Have the browser POST `body` to one of our routes (dashboard/web.py), same origin, once."""
    st.html(f"<script>fetch({json.dumps(path)}, {{method: 'POST', credentials: 'same-origin', cache: 'no-store', "
            f"body: {json.dumps(body)}}});</script>", unsafe_allow_javascript=True)


def end_session_state() -> None:
    """Forget this page's sign-in and everything chosen under it (filters, the open call, links)."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def current_user() -> str | None:
    """The user of this page's live session (from this run's state, else the browser's cookie)."""
    token = st.session_state.get("session_token")
    if token is None:
        token = st.context.cookies.get(COOKIE)
        if token and REGISTRY.user(token):
            st.session_state["session_token"] = token
    user = REGISTRY.user(token)
    if user is None and st.session_state.get("session_token"):
        end_session_state()
        st.session_state["ended"] = True
    st.session_state["user"] = user or ""
    return user


def record_sign_in(name: str) -> None:
    """The sign-in in the audit log; a store that cannot take it now does not keep the user out
    (every call they then open is audited, and refused if that cannot be recorded)."""
    from emotivoice.storage.db import StorageError
    from emotivoice.storage.store import open_store

    try:
        open_store(db_path(), user=name, client=client_address()).write("record_event", event="sign_in")
    except StorageError as exc:
        log.warning("sign-in not recorded in the audit log", extra={"user_name": name, "error": str(exc)[:200]})


def open_session(user: str) -> None:
    """Audit the sign-in, open the server-side session and hand its cookie ticket to the page."""
    record_sign_in(user)
    token = REGISTRY.open(user, settings().dashboard.session_ttl_s)
    st.session_state["session_token"] = token
    st.session_state["cookie_ticket"] = REGISTRY.ticket(token)
    st.rerun()


def login() -> None:
    st.title("EmotiVoice")
    if st.session_state.pop("clear_cookie", False):
        post_from_page("/api/logout")
    if st.session_state.pop("ended", False):
        st.info("Your session has ended. Sign in again.")
    if not load_users(settings()):
        st.error("No dashboard users are set up. Create one with `emotivoice users add NAME`.")
        st.stop()
    if settings().oidc.enabled:  # single sign-on: claims mapped to a role (dashboard/sso.py)
        from emotivoice.dashboard.sso import offer_sign_on

        if signed_on := offer_sign_on(settings()):
            open_session(signed_on)
    with st.form("login"):
        name = st.text_input("Username", max_chars=128)
        password = st.text_input("Password", type="password", max_chars=1024)
        if st.form_submit_button("Log in"):
            result = sign_in(settings(), name, password, client_address())
            if result.user:
                open_session(result.user)
            wait = math.ceil(result.retry_after_s)
            if result.throttled:
                st.error(f"Too many failed sign-ins. Try again in {wait} s.")
            else:
                st.error("Wrong username or password." + (f" Further sign-ins wait {wait} s." if wait else ""))
    st.stop()


PAGE_FILES = [("live", "Live floor", "🚨"), ("review", "Call review", "🎧"), ("agents", "Agents", "🧑‍💼"),
              ("churn", "Churn risk", "📉"), ("audit", "Audit log", "📜"), ("rules", "Rules", "🧩")]
PAGE_FILES.insert(2, ("search", "Search", "🔎"))  # issue 16: search every transcript

if not current_user():  # every page's URL shows the sign-in form, runs nothing else, links nowhere;
    st.navigation([st.Page(login, title="Sign in", icon="🔒", url_path=name, default=i == 0)  # after it: that page
                   for i, (name, _, _) in enumerate(PAGE_FILES)], position="hidden").run()
    st.stop()

allowed = PAGES.get(role() or "", ())
if not allowed:  # the user's entry is gone from the user file: signed out
    REGISTRY.close(st.session_state.get("session_token"))
    end_session_state()
    st.session_state["ended"] = True
    st.rerun()

with st.sidebar:
    st.caption(f"Signed in as **{st.session_state['user']}** ({role()})")
    if "cookie_ticket" in st.session_state:  # once: the browser exchanges it for the HttpOnly cookie
        post_from_page("/api/session", st.session_state.pop("cookie_ticket"))
    if st.button("Log out"):
        REGISTRY.close(st.session_state.get("session_token"))
        end_session_state()
        st.session_state["clear_cookie"] = True
        if settings().oidc.enabled:
            from emotivoice.dashboard.sso import sign_off

            sign_off()
        st.rerun()

shown = [(name, title, icon) for name, title, icon in PAGE_FILES if name in allowed]
page = st.navigation([st.Page(VIEWS / f"{name}.py", title=title, icon=icon, url_path=name, default=i == 0)
                      for i, (name, title, icon) in enumerate(shown)])
page.run()
