"""Admin sign-in for the study pages: a password form over :func:`lungseg.study.admin_login`.

``require_admin()`` returns the signed-in :class:`AdminSession` or shows only the sign-in form and
stops the page, so an admin page shows no study data before sign-in.  The session lives in
``st.session_state`` (per browser tab/session) and expires as the library says (8 h).

OIDC through ``st.login`` is not wired in (see the module docs in the report): passwords only.
"""

from __future__ import annotations

import time

import streamlit as st

from lungseg.study import AccountLocked, AdminSession, AuthError, admin_login

from .study_ui import get_store

SESSION_KEY = "admin_session"

# The library pauses before checking a password after wrong ones (0.5 s doubling to 4 s).  Tests
# replace this with a no-op (monkeypatch ``lungseg_app.auth.SLEEP``); never change it in production.
SLEEP = time.sleep


def current_admin() -> AdminSession | None:
    admin = st.session_state.get(SESSION_KEY)
    if isinstance(admin, AdminSession) and admin.valid():
        return admin
    if admin is not None:
        del st.session_state[SESSION_KEY]
    return None


def sign_out() -> None:
    st.session_state.pop(SESSION_KEY, None)


def sign_in_form() -> AdminSession | None:
    st.subheader("Admin sign-in")
    st.caption("This page is for study administrators. Sign in to continue.")
    with st.form("admin_signin"):
        user = st.text_input("Username", key="signin_user")
        pw = st.text_input("Password", type="password", key="signin_pw")
        submitted = st.form_submit_button("Sign in")
    if not submitted:
        return None
    try:
        admin = admin_login(get_store(), user, pw, sleep=lambda s: SLEEP(s))
    except AccountLocked as exc:
        st.error(f"Sign-in locked: {exc}. Try again later.")
        return None
    except AuthError:
        st.error("Wrong username or password.")
        return None
    st.session_state[SESSION_KEY] = admin
    return admin


def require_admin() -> AdminSession:
    """The signed-in admin; otherwise show only the sign-in form and stop the page."""
    admin = current_admin()
    if admin is None:
        admin = sign_in_form()
        if admin is None:
            st.stop()
        st.rerun()
    with st.sidebar:
        st.caption(f"Signed in as **{admin.username}**")
        if st.button("Sign out", key="admin_signout"):
            sign_out()
            st.rerun()
    return admin
