"""EmotiVoice supervisor dashboard: sign in, then the live floor, call reviews, agent trends and
churn risk. Every page reads through storage.store (the service that owns the DuckDB file when
one runs, the file itself otherwise), so it shows live data without ever locking the writer.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.auth import authenticate, load_users
from dashboard.common import settings

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="EmotiVoice", page_icon="🎧", layout="wide")


def login() -> None:
    st.title("EmotiVoice")
    if not load_users(settings()):
        st.error("No dashboard users are set up. Create one with `emotivoice users add NAME`.")
        st.stop()
    with st.form("login"):
        name = st.text_input("Username")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Log in"):
            if authenticate(settings(), name, password):
                st.session_state["user"] = name
                st.rerun()
            st.error("Wrong username or password.")
    st.stop()


if not st.session_state.get("user"):
    login()

with st.sidebar:
    st.caption(f"Signed in as **{st.session_state['user']}**")
    if st.button("Log out"):
        st.session_state.clear()
        st.rerun()

page = st.navigation([
    st.Page(PAGES / "live.py", title="Live floor", icon="🚨", default=True),
    st.Page(PAGES / "review.py", title="Call review", icon="🎧"),
    st.Page(PAGES / "agents.py", title="Agents", icon="🧑‍💼"),
    st.Page(PAGES / "churn.py", title="Churn risk", icon="📉"),
])
page.run()
