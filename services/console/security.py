"""Access to the console: where it may bind, the sign-in token, and protection of every form.

* Binding: a loopback address needs no token (only this machine reaches it); any other address needs
  ``QUERYLIFT_CONSOLE_TOKEN``. Without a token, requests must also name a loopback host, so a web page that
  re-points its own domain at 127.0.0.1 (DNS rebinding) cannot read the console.
* Sign-in: with a token, every page wants either ``Authorization: Bearer <token>`` or the session cookie the
  sign-in form sets. The cookie holds an HMAC of the token, never the token itself.
* Forms: double-submit with a signed value. A random nonce lives in a SameSite=Strict cookie; each form
  carries HMAC(secret, nonce). Another site can neither read the form's value nor make one for the victim's
  nonce, and a request whose Origin is another site is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

CSRF_COOKIE = "querylift_csrf"
CSRF_FIELD = "csrf"
SESSION_COOKIE = "querylift_session"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def binding_problem(host: str, token: str | None) -> str | None:
    """Why the console may not serve on ``host``, or None."""
    if token or is_loopback(host):
        return None
    return (
        f"the console serves {host}, which other machines can reach: set QUERYLIFT_CONSOLE_TOKEN to a long "
        "random value first (people then sign in with it), or bind 127.0.0.1"
    )


def _host_name(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


@dataclass
class Guard:
    token: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    # --- sign-in -----------------------------------------------------------------------------------
    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"querylift-console-session", hashlib.sha256).hexdigest()

    def token_matches(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def signed_in(self, request: Request) -> bool:
        if self.token is None:
            return True
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self.token_matches(auth[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.session_value().encode())

    def host_allowed(self, request: Request) -> bool:
        """Without a token only loopback host names are served (DNS rebinding)."""
        return self.token is not None or is_loopback(_host_name(request.headers.get("host", "")))

    # --- forms -------------------------------------------------------------------------------------
    def nonce(self, request: Request) -> tuple[str, bool]:
        """The request's CSRF nonce, and whether it is new (then the response must set the cookie)."""
        current = request.cookies.get(CSRF_COOKIE, "")
        if len(current) == 43:  # what token_urlsafe(32) makes
            return current, False
        return secrets.token_urlsafe(32), True

    def form_token(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()

    def form_allowed(self, request: Request, submitted: str) -> bool:
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                return False
        elif origin == "null":
            return False
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if not nonce or not submitted:
            return False
        return hmac.compare_digest(submitted.encode(), self.form_token(nonce).encode())
