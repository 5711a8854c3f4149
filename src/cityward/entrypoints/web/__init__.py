"""The web dashboard: server-rendered pages (Jinja2, autoescaped) over the same services as the API.

People sign in with a password (services/users.py); the session lives in a cookie that is Secure,
HttpOnly and SameSite=Strict, and every form carries a CSRF token checked against the session (or,
for the sign-in form, against a cookie of its own). Pages show only what the signed-in user's
organization may see: the services scope every read by the caller.
"""

from cityward.entrypoints.web.app import install_web

__all__ = ["install_web"]
