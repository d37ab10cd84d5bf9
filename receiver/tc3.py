"""TC3-HMAC-SHA256, Tencent Cloud API 3.0's request signature: compute and check it. Pure."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "TC3-HMAC-SHA256"


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
    """The hex signature over the canonical request, as section 6.3 of the spec lays it out."""
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed_headers)
    payload_hash = (
        hashlib.sha256(b"UNSIGNED-PAYLOAD").hexdigest()
        if lowered.get("x-tc-content-sha256") == "UNSIGNED-PAYLOAD"
        else hashlib.sha256(body).hexdigest()
    )
    canonical = "\n".join(
        [method.upper(), "/", query, canonical_headers, ";".join(signed_headers), payload_hash]
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
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
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return (
        f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request,"
        f" SignedHeaders={';'.join(signed_headers)}, Signature={sig}"
    )
