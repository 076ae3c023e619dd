"""What `streamlit run` serves: the dashboard script plus its own routes and media guard (st.App).

Streamlit 1.67 finds the `app = st.App(...)` below and serves it with uvicorn, with the same
command-line options as a plain script. Streamlit's own endpoints have no authentication, so the
dashboard adds (dashboard/web.py) a session-cookie endpoint, a signed audio endpoint, and a guard
that answers Streamlit's /media/ store only to signed-in sessions.
"""

import os
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from emotivoice.dashboard.sessions import link_secret
from emotivoice.dashboard.web import ROUTES, MediaGuard
from emotivoice.config import load_settings
from emotivoice.logs import setup_logging

setup_logging(os.environ.get("EMOTIVOICE_LOG_LEVEL", "WARNING"))  # refusals and lockouts as JSON lines
link_secret(load_settings())  # made (0600) or checked now, so a bad key file stops the start, not a playback

APP = Path(__file__).resolve().parent / "app.py"

app = st.App(APP, routes=ROUTES, middleware=[Middleware(MediaGuard)])
