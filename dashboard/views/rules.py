"""Rules (admins only): the categories' rules TOML in use, edited here, checked by the rules loader
(its errors name the category and the key, or the TOML line), saved, and re-run on stored calls.

Everything goes through the store (storage/rules_file.py), which refuses these queries to anyone
but an admin whatever this page shows, writes the file atomically and owner-only where its own
settings say (analytics.rules_file, or analytics.edited_rules_file while that names the shipped
set), and records saves and re-runs in the audit log. A save is refused when the file changed
since the page read it.
"""

from __future__ import annotations

import streamlit as st

from emotivoice.dashboard.common import read_or_stop, require_sign_in, store
from emotivoice.storage.db import BadRequest, StorageError

require_sign_in()
st.title("Rules")
db = store()  # looked up once per run: the service that owns the file, or the file
editor = read_or_stop(db, "rules_editor").iloc[0]
if "rules_text" not in st.session_state or st.session_state.get("rules_reload"):
    st.session_state["rules_text"] = editor.rules_toml
    st.session_state["rules_digest"] = editor.digest  # what a save expects to replace
    st.session_state["rules_reload"] = False

if editor.shipped:
    st.caption(f"In use: the shipped default set. Saving writes `{editor.target_file}`, which every analysis "
               "then uses (new calls at once, live calls from their next utterance).")
else:
    st.caption(f"In use: `{editor.active_file}`. Saving replaces it; new calls use it at once, live calls from "
               "their next utterance. Format: see analysis/insight/default_rules.toml.")
if st.session_state["rules_digest"] != editor.digest:
    st.warning("The rules file changed since you opened it. Reload to see it (your edits here are lost).")

st.text_area("Rules (TOML)", key="rules_text", height=520)
b1, b2, b3, _ = st.columns([1, 1, 1, 3])
verdict = None
if b1.button("Validate"):
    verdict = db.read("check_rules", text=st.session_state["rules_text"]).iloc[0]
if b2.button("Save", type="primary"):
    try:
        saved = db.write("save_rules", text=st.session_state["rules_text"],
                         expected_digest=st.session_state["rules_digest"])
        st.session_state["rules_digest"] = saved["after"]
        st.success(f"Saved to {saved['path']}: {saved['summary']}. Re-run them on stored calls to update "
                   "their categories.")
    except BadRequest as exc:  # the loader's error, a stale editor, or (for a non-admin) the store's refusal
        st.error(f"Not saved: {exc}")
if b3.button("Reload from file"):
    st.session_state["rules_reload"] = True
    st.rerun()
if verdict is not None:
    (st.success if verdict.ok else st.error)(("Usable: " if verdict.ok else "Not usable: ") + verdict.message)

st.subheader("Stored calls")
st.caption("Re-running judges every stored call again with the rules in use (as `emotivoice rules run`): "
           "their categories and summaries change, nothing else.")
if st.button("Re-run rules on stored calls", disabled=editor.rerun_state == "running"):
    try:
        db.write("rerun_rules")
    except (BadRequest, StorageError) as exc:
        st.error(f"Not started: {exc}")
    st.rerun()


def rerun_status() -> None:
    """The latest re-run, refreshed every 2 s while it runs."""
    require_sign_in()
    run = store().read("rules_editor").iloc[0]
    if editor.rerun_state == "running" and run.rerun_state != "running":
        st.rerun(scope="app")  # finished: the whole page again, its button enabled
    if run.rerun_state == "running":
        st.info(f"Re-running the rules on stored calls (started {run.rerun_started_at:%H:%M:%S} UTC by "
                f"{run.rerun_started_by or 'a service'})…")
    elif run.rerun_state == "done":
        st.success(f"Last re-run, finished {run.rerun_finished_at:%Y-%m-%d %H:%M:%S} UTC: {run.rerun_summary}")
    elif run.rerun_state == "failed":
        st.error(f"Last re-run failed: {run.rerun_summary}")


st.fragment(run_every=2.0 if editor.rerun_state == "running" else None)(rerun_status)()
