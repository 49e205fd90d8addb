"""Accounts and sign-in: password rules and hashing, the sign-in throttle, sign-in sessions, who sees what.

Guarantees (each tested in tests/app/test_accounts.py):
- passwords are at least PASSWORD_MIN_LENGTH characters and stored only as salted scrypt hashes
  (`scrypt$N$r$p$salt$hash`, standard library `hashlib.scrypt`); comparisons are constant-time;
- a wrong name costs the same scrypt work as a wrong password, and the message never says which was wrong;
- failed sign-ins are counted per account and per client address (in the database, so every app process
  behind one DATABASE_URL shares them); after FREE_FAILURES in a row each further one doubles a waiting time
  (capped at MAX_WAIT_S) during which that account or address cannot sign in at all, right password or not;
- a sign-in yields a random session token; only its SHA-256 is stored, it expires after the sign-in lifetime
  (RENAL_LDM_SIGN_IN_HOURS, default 8) and ends when the account is removed or its password changes;
- RENAL_LDM_ADMIN_PASSWORD (the survey's original shared password) keeps working as the researcher account
  ADMIN_NAME, so existing deployments keep their sign-in;
- with no account and no admin password the app is in open mode (local use: everything reachable, no sign-in).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from db import repository as repo
from db.models import ACCOUNT_ROLES

RESEARCHER, ANNOTATOR = ACCOUNT_ROLES
PASSWORD_MIN_LENGTH = 12
ADMIN_PASSWORD_ENV = "RENAL_LDM_ADMIN_PASSWORD"
ADMIN_NAME = "admin"
SIGN_IN_HOURS_ENV = "RENAL_LDM_SIGN_IN_HOURS"
DEFAULT_SIGN_IN_HOURS = 8.0

FREE_FAILURES = 3
"""Failed sign-ins in a row that cost nothing (typos); from the next one on, a wait applies."""
MAX_WAIT_S = 300

# scrypt cost: N = 2**15, r = 8 takes 32 MiB and about 0.2 s per check (217 ms measured at load 5 on the 2-core
# machine): cheap for one person signing in, expensive for anyone guessing offline from a stolen database.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**15, 8, 1, 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class SignInError(ValueError):
    """A refused sign-in; `retry_after_s` is set while the throttle holds."""

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Identity:
    """Who is using this browser session, and with which role."""

    name: str
    role: str


# ------------------------------------------------------------------------------------------- passwords


def check_password_rules(password: str) -> str:
    """The password when it is acceptable; a ValueError saying what is missing otherwise."""
    if not isinstance(password, str) or len(password) < PASSWORD_MIN_LENGTH:
        got = len(password) if isinstance(password, str) else 0
        raise ValueError(f"a password needs at least {PASSWORD_MIN_LENGTH} characters (got {got})")
    if password != password.strip():
        raise ValueError("a password may not begin or end with a space")
    return password


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash; a malformed hash matches nothing."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_DUMMY_HASH = None


def _dummy_hash() -> str:
    """A hash to check against when the account does not exist, so that costs the same time."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=SCRYPT_DKLEN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------------- accounts


def admin_password() -> str | None:
    """RENAL_LDM_ADMIN_PASSWORD, or None when unset or blank."""
    value = os.environ.get(ADMIN_PASSWORD_ENV, "")
    return value if value.strip() else None


def accounts_configured(*, url: str | None = None) -> bool:
    """True when sign-in is required: an account exists or the admin password is set."""
    return admin_password() is not None or repo.count_accounts(url=url) > 0


def add_account(name: str, role: str, password: str, *, url: str | None = None) -> repo.Account:
    if repo.account_name(name) == ADMIN_NAME and admin_password() is not None:
        raise ValueError(f"the name {ADMIN_NAME!r} is the account of {ADMIN_PASSWORD_ENV}; choose another name")
    return repo.add_account(name, role, hash_password(check_password_rules(password)), url=url)


def change_password(name: str, password: str, *, url: str | None = None) -> repo.Account:
    return repo.set_password_hash(name, hash_password(check_password_rules(password)), url=url)


# ------------------------------------------------------------------------------------------- sign-in


def wait_seconds(failures: int) -> int:
    """How long an account or address must wait after `failures` failed sign-ins in a row."""
    if failures <= FREE_FAILURES:
        return 0
    return min(MAX_WAIT_S, 2 ** (failures - FREE_FAILURES))


def throttle_keys(name: str, client: str | None) -> list[str]:
    return [f"account:{name.strip().casefold()}", f"client:{client or 'local'}"]


def retry_after(name: str, client: str | None, now: datetime, *, url: str | None = None) -> int:
    """Seconds before this account and address may try again (0: now)."""
    longest = 0
    for key in throttle_keys(name, client):
        failures, last = repo.sign_in_failures(key, url=url)
        if last is not None:
            left = wait_seconds(failures) - (now - last).total_seconds()
            longest = max(longest, int(left + 0.999))
    return max(0, longest)


def sign_in(
    name: str, password: str, *, client: str | None = None, now: datetime | None = None, url: str | None = None
) -> tuple[Identity, str]:
    """Check a name and password; returns the identity and a new session token, or raises SignInError."""
    now = now or datetime.now(UTC)
    name = (name or "").strip()
    wait = retry_after(name, client, now, url=url)
    if wait > 0:
        raise SignInError(f"Too many failed sign-ins. Try again in {wait} s.", retry_after_s=wait)
    checked = _check(name, password or "", url=url)
    if checked is None:
        for key in throttle_keys(name, client):
            repo.record_sign_in_failure(key, now, url=url)
        raise SignInError("Wrong name or password.", retry_after_s=retry_after(name, client, now, url=url) or None)
    identity, credential = checked
    repo.clear_sign_in_failures(throttle_keys(name, client), url=url)
    token = secrets.token_urlsafe(32)
    repo.create_sign_in_session(
        _token_hash(token), identity.name, identity.role, _digest(credential), now + sign_in_lifetime(), url=url
    )
    return identity, token


def _current_credential(name: str, *, url: str | None) -> tuple[Identity, str] | None:
    """The identity behind a name and the secret it signs in with now (the admin password or the stored hash)."""
    admin = admin_password()
    if admin is not None and name == ADMIN_NAME:
        return Identity(ADMIN_NAME, RESEARCHER), admin
    found = repo.get_credentials(name, url=url) if name else None
    if found is None:
        return None
    account, stored = found
    return Identity(account.name, account.role), stored


def _check(name: str, password: str, *, url: str | None) -> tuple[Identity, str] | None:
    current = _current_credential(name, url=url)
    if current is None:
        verify_password(password, _dummy_hash())  # the same work as for a real account
        return None
    identity, secret = current
    if identity.name == ADMIN_NAME and secret == admin_password():
        ok = hmac.compare_digest(password.encode("utf-8"), secret.encode("utf-8"))
    else:
        ok = verify_password(password, secret)
    return current if ok else None


def sign_in_lifetime() -> timedelta:
    raw = os.environ.get(SIGN_IN_HOURS_ENV, "").strip()
    try:
        hours = float(raw) if raw else DEFAULT_SIGN_IN_HOURS
    except ValueError:
        hours = -1.0
    if not 0 < hours <= 24 * 30:
        raise ValueError(f"environment variable {SIGN_IN_HOURS_ENV}={raw!r} must be a number of hours in (0, 720]")
    return timedelta(hours=hours)


def resume_session(token: str | None, *, now: datetime | None = None, url: str | None = None) -> Identity | None:
    """The identity a session token stands for, or None when it is unknown, expired or its account is gone."""
    if not isinstance(token, str) or not token:
        return None
    now = now or datetime.now(UTC)
    session = repo.get_sign_in_session(_token_hash(token), now, url=url)
    if session is None:
        return None
    current = _current_credential(session.account_name, url=url)
    if current is None or not hmac.compare_digest(_digest(current[1]), session.credential_digest):
        return None  # the account is gone, or its password (or the admin password) changed since
    return current[0]


def sign_out(token: str | None, *, url: str | None = None) -> None:
    if token:
        repo.delete_sign_in_session(_token_hash(token), url=url)


def _digest(secret: str) -> str:
    return hashlib.sha256(("renal-ldm credential:" + secret).encode("utf-8")).hexdigest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
