"""Secrets out of what is recorded: URLs with passwords or tokens, masked before they reach
logs, lineage, the audit log or an error message.

A connection or webhook URL often carries its credential: ``user:pass@`` in the authority,
``?password=`` or ``?token=`` in the query (SQL drivers, presigned object-store URLs), or
the whole path (a Slack or Discord webhook is its own secret). :func:`mask_url` keeps what
tells a reader which service it is (scheme, host, port, path unless told otherwise) and
replaces each credential with ``***``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
#: Query parameter names (lowercase, ``-`` read as ``_``) whose values are credentials.
SECRET_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "auth_token",
        "authorization",
        "api_key",
        "apikey",
        "key",
        "access_key",
        "secret_key",
        "sig",
        "signature",
        "x_amz_signature",
        "x_amz_credential",
        "x_amz_security_token",
        "credential",
        "credentials",
        "sslpassword",
        "session_token",
    }
)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def _secret_param(name: str) -> bool:
    key = name.strip().lower().replace("-", "_")
    return key in SECRET_PARAMS or key.endswith(("_password", "_secret", "_token"))


def mask_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` with its password, credential query values and (``keep_path=False``) path masked.

    >>> mask_url("postgresql://app:s3cret@db:5432/prod?sslmode=require&password=x")
    'postgresql://app:***@db:5432/prod?sslmode=require&password=***'
    >>> mask_url("https://hooks.slack.com/services/T0/B0/XYZ", keep_path=False)
    'https://hooks.slack.com/***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    if not parts.scheme or (not parts.netloc and not parts.query):
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{quote(k, safe='')}={MASK if _secret_param(k) else quote(v, safe='')}" for k, v in pairs
        )
    path = parts.path
    if not keep_path and path not in ("", "/"):
        path = "/" + MASK
    return urlunsplit((parts.scheme, netloc, path, query, "" if not keep_path else parts.fragment))


def mask_text(text: str) -> str:
    """Every ``scheme://user:password@`` in free text with its password masked.

    >>> mask_text("cannot reach mysql://root:hunter2@10.0.0.5/db: timeout")
    'cannot reach mysql://root:***@10.0.0.5/db: timeout'
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
