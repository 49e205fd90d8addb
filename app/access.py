"""Who may see which page, in the browser: the sign-in page, the sign-in cookie, the sidebar notice.

The rules (passwords, throttle, session tokens) are in app/accounts.py; this module only moves them through
Streamlit.

How a sign-in survives a reload: on success the server makes a random token (its SHA-256 is stored with an
expiry, RENAL_LDM_SIGN_IN_HOURS, default 8 h) and the page sets it as a first-party cookie, `SameSite=Strict`,
`Secure` over https, path `/`. Streamlit hands every new browser session the cookies of its websocket request
(`st.context.cookies`), so a reload or a new tab of the same browser finds the token and the account again;
no password or token ever appears in a URL. The trade-off: Streamlit offers no way to set a cookie from the
server, so the cookie is set by a script of the page and cannot be HttpOnly; a script injected into the page
could read it. The app never renders user text as HTML or Markdown, which is what keeps such a script out, and
the token dies on sign-out, on expiry, when the password changes and when the account is removed.
"""

from __future__ import annotations

import json

import streamlit as st

from app import accounts

SESSION_COOKIE = "renal_ldm_session"
IDENTITY = "renal_ldm.identity"  # st.session_state: the signed-in Identity
TOKEN = "renal_ldm.sign_in_token"  # st.session_state: this browser's session token
COOKIE_PENDING = "renal_ldm.cookie_pending"  # st.session_state: ("set", token, max_age) or ("clear",)

OPEN_MODE_NOTICE = (
    "**Open mode**: no accounts are set up, so every page is reachable without signing in. "
    "Keep the app on 127.0.0.1 (as `make run` does) or add an account with `renal-ldm users add`."
)
SIGN_IN_NOTICE = (
    "This is the renal-ldm workspace; it needs a sign-in. If you are taking part in a survey, please open "
    "the survey link you were given."
)


def open_mode() -> bool:
    """No account and no admin password: local use, no sign-in."""
    return not accounts.accounts_configured()


def current_identity() -> accounts.Identity | None:
    """The signed-in account of this browser session (from the session, else from the sign-in cookie); each
    run checks the token again, so a removed account or a changed password signs the browser out at once."""
    token = st.session_state.get(TOKEN) or _cookie_token()
    identity = accounts.resume_session(token)
    if identity is None:
        st.session_state.pop(IDENTITY, None)
        st.session_state.pop(TOKEN, None)
        return None
    st.session_state[IDENTITY], st.session_state[TOKEN] = identity, token
    return identity


def _cookie_token() -> str | None:
    try:
        value = st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # no browser connection (AppTest, bare script runs): no cookies to read
        return None
    return value if isinstance(value, str) and value else None


def client_address() -> str | None:
    """The browser's address as the server sees it (None on localhost): one key of the sign-in throttle."""
    try:
        address = st.context.ip_address
    except Exception:
        return None
    return address if isinstance(address, str) else None


def sign_in_page() -> None:
    """The only page a visitor without a sign-in gets."""
    st.title("Sign in")
    st.info(SIGN_IN_NOTICE, icon=":material/lock:")
    with st.form("sign_in"):
        name = st.text_input("Name", key="sign_in_name", max_chars=200)
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    try:
        identity, token = accounts.sign_in(name, password, client=client_address())
    except accounts.SignInError as exc:
        st.error(str(exc))
        return
    st.session_state[IDENTITY], st.session_state[TOKEN] = identity, token
    max_age = int(accounts.sign_in_lifetime().total_seconds())
    st.session_state[COOKIE_PENDING] = ("set", token, max_age)
    st.rerun()


def sidebar(identity: accounts.Identity | None) -> None:
    """Who is signed in (with a sign-out button), or the open-mode notice."""
    with st.sidebar:
        if identity is None:
            st.warning(OPEN_MODE_NOTICE, icon=":material/lock_open:")
            return
        st.caption(f"Signed in as {identity.name} ({identity.role})")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            accounts.sign_out(st.session_state.get(TOKEN))
            for key in (IDENTITY, TOKEN):
                st.session_state.pop(key, None)
            st.session_state[COOKIE_PENDING] = ("clear",)
            st.rerun()


def write_pending_cookie() -> None:
    """Set or clear the sign-in cookie in the browser once, on the run after a sign-in or sign-out."""
    pending = st.session_state.pop(COOKIE_PENDING, None)
    if pending is None:
        return
    if pending[0] == "set":
        _, token, max_age = pending
        value = f"{SESSION_COOKIE}={token}; Max-Age={int(max_age)}; Path=/; SameSite=Strict"
    else:
        value = f"{SESSION_COOKIE}=; Max-Age=0; Path=/; SameSite=Strict"
    # json.dumps makes the cookie text a safe JavaScript string literal (the token is URL-safe base64 anyway).
    st.html(
        f"<script>document.cookie = {json.dumps(value)} + (location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True,
    )
