"""TC3-HMAC-SHA256, Tencent Cloud API 3.0's request signature: compute and check it. Pure.

``verify`` is the server's side, answering with API 3.0's documented error codes
(``AuthFailure.InvalidAuthorization``, ``AuthFailure.SecretIdNotFound``, ``AuthFailure.SignatureExpire``,
``AuthFailure.SignatureFailure``). The client does not choose what is signed: ``SignedHeaders`` must
include ``content-type`` and ``host`` (the documentation's mandatory pair; the official SDKs sign
exactly these) and whatever more the server requires, and the payload must be signed: the real API
accepts ``UNSIGNED-PAYLOAD``, which lets anyone who saw one request's headers send any body under
them for five minutes, and we do not. Replays are the caller's business: a check of one request
cannot know what came before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from receiver.errors import ReceiverError

ALGORITHM = "TC3-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
REQUIRED_SIGNED_HEADERS = ("content-type", "host")
MAX_SKEW = 300  # seconds either way, as the real API allows


class Tc3Error(ReceiverError):
    """A request that fails the check; ``api_code`` is the API 3.0 error code to answer with."""

    code = "tc3_refused"

    def __init__(self, api_code: str, message: str) -> None:
        self.api_code = api_code
        self.message = message
        super().__init__(f"{api_code}: {message}")


def _date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signature(
    *,
    secret_key: str,
    service: str,
    timestamp: int,
    method: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    body: bytes,
    query: str = "",
) -> str:
    """The hex signature over the canonical request, as section 6.3 of the spec lays it out, with
    the body always hashed (an unsigned payload is refused by ``verify`` before this runs)."""
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed_headers)
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [method.upper(), "/", query, canonical_headers, ";".join(signed_headers), payload_hash]
    )
    date = _date(timestamp)
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join([ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k_date = _hmac(f"TC3{secret_key}".encode(), date)
    k_signing = _hmac(_hmac(k_date, service), "tc3_request")
    return hmac.new(k_signing, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Authorization:
    secret_id: str
    date: str
    service: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    """Read ``TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=a;b,
    Signature=<hex>``; None when it is not that."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    parts = {}
    for item in rest.split(","):
        key, _, val = item.strip().partition("=")
        parts[key] = val
    credential = parts.get("Credential", "").split("/")
    if len(credential) != 4 or credential[3] != "tc3_request" or not parts.get("Signature"):
        return None
    return Authorization(
        secret_id=credential[0],
        date=credential[1],
        service=credential[2],
        signed_headers=[h for h in parts.get("SignedHeaders", "").split(";") if h],
        signature=parts["Signature"],
    )


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(a.encode(), b.encode())


def authorization(
    *, secret_id: str, service: str, timestamp: int, signed_headers: list[str], sig: str
) -> str:
    date = _date(timestamp)
    return (
        f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request,"
        f" SignedHeaders={';'.join(signed_headers)}, Signature={sig}"
    )


def verify(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    query: str = "",
    required_headers: tuple[str, ...] = REQUIRED_SIGNED_HEADERS,
    max_skew: int = MAX_SKEW,
) -> Authorization:
    """Check one request against the one credential pair a server holds; the parsed Authorization
    when it passes, else ``Tc3Error`` with the code the real API gives for the same fault."""
    lowered = {k.lower(): v for k, v in headers.items()}
    auth = parse_authorization(lowered.get("authorization", ""))
    if auth is None:
        raise Tc3Error(
            "AuthFailure.InvalidAuthorization",
            "the Authorization header is not TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request,"
            " SignedHeaders=<a;b>, Signature=<hex>",
        )
    missing = [h for h in required_headers if h not in auth.signed_headers]
    if missing:
        raise Tc3Error(
            "AuthFailure.InvalidAuthorization",
            f"SignedHeaders must include {';'.join(required_headers)}: {';'.join(missing)} not signed",
        )
    if lowered.get("x-tc-content-sha256", "").strip() == UNSIGNED_PAYLOAD:
        raise Tc3Error(
            "AuthFailure.SignatureFailure",
            "X-TC-Content-SHA256: UNSIGNED-PAYLOAD is not accepted: the request body must be signed",
        )
    try:
        timestamp = int(lowered.get("x-tc-timestamp", ""))
    except ValueError:
        raise Tc3Error("AuthFailure.SignatureFailure", "X-TC-Timestamp is missing or not a number") from None
    if abs(now - timestamp) > max_skew:
        raise Tc3Error(
            "AuthFailure.SignatureExpire",
            f"X-TC-Timestamp is more than {max_skew} seconds away from the server's time",
        )
    if auth.secret_id != secret_id:
        raise Tc3Error("AuthFailure.SecretIdNotFound", "the SecretId in Credential is not known")
    if auth.service != service or auth.date != _date(timestamp):
        raise Tc3Error(
            "AuthFailure.SignatureFailure",
            f"the Credential scope must be <date of X-TC-Timestamp>/{service}/tc3_request",
        )
    expected = signature(
        secret_key=secret_key,
        service=service,
        timestamp=timestamp,
        method=method,
        headers=headers,
        signed_headers=auth.signed_headers,
        body=body,
        query=query,
    )
    if not same(expected, auth.signature):
        raise Tc3Error("AuthFailure.SignatureFailure", "the signature does not match")
    return auth
