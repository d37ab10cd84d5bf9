"""``redact_url()``: a URL as it may be logged, with its password and query values masked."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """The URL with the password (``user:***@``) and every query value (``?password=***``) masked.

    What stays (scheme, user, host, port, path) is what an operator needs to tell stores and
    brokers apart; a URL that cannot be parsed is masked whole rather than shown.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        return MASK
    if parts.password is None and not parts.query and not parts.fragment:
        return url  # nothing secret in it (and ``sqlite:///path`` keeps its three slashes)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None:
        user = parts.username + (f":{MASK}" if parts.password is not None else "")
        netloc = f"{user}@{netloc}"
    query = "&".join(
        f"{name}={MASK}" if sep else MASK
        for name, sep, _ in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
