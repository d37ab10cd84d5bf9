"""TC3-HMAC-SHA256 against the official test vector, and the Authorization header's shape."""

from __future__ import annotations

from receiver import tc3


def test_official_cvm_test_vector() -> None:
    body = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    sig = tc3.signature(
        secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        service="cvm",
        timestamp=1551113065,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com"},
        signed_headers=["content-type", "host"],
        body=body,
    )
    assert sig == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


def test_authorization_header_round_trips() -> None:
    value = tc3.authorization(
        secret_id="AKID",
        service="mps",
        timestamp=1551113065,
        signed_headers=["content-type", "host"],
        sig="ab" * 32,
    )
    parsed = tc3.parse_authorization(value)
    assert parsed is not None
    assert (parsed.secret_id, parsed.date, parsed.service) == ("AKID", "2019-02-25", "mps")
    assert parsed.signed_headers == ["content-type", "host"]
    assert parsed.signature == "ab" * 32
    assert tc3.parse_authorization("HMAC-SHA1 whatever") is None
    assert tc3.parse_authorization("TC3-HMAC-SHA256 Credential=a/b, Signature=x") is None


def official_request() -> tuple[dict[str, str], bytes]:
    body = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Host": "cvm.tencentcloudapi.com",
        "X-TC-Timestamp": "1551113065",
        "Authorization": "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168",
    }
    return headers, body


def check(headers: dict[str, str], body: bytes, now: float = 1551113065) -> str:
    try:
        tc3.verify(
            secret_id="AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            service="cvm",
            method="POST",
            headers=headers,
            body=body,
            now=now,
        )
    except tc3.Tc3Error as exc:
        return exc.api_code
    return "ok"


def test_verify_accepts_the_official_example_and_refuses_what_it_must() -> None:
    headers, body = official_request()
    assert check(headers, body) == "ok"
    assert check(headers, body, now=1551113065 + 301) == "AuthFailure.SignatureExpire"
    assert check(headers, body + b" ") == "AuthFailure.SignatureFailure"
    assert check({**headers, "Host": "evil.example"}, body) == "AuthFailure.SignatureFailure"
    assert check({**headers, "X-TC-Content-SHA256": "UNSIGNED-PAYLOAD"}, body) == (
        "AuthFailure.SignatureFailure"
    )
    only_host = headers["Authorization"].replace("content-type;host", "host")
    assert check({**headers, "Authorization": only_host}, body) == "AuthFailure.InvalidAuthorization"
    assert check({**headers, "Authorization": "Basic x"}, body) == "AuthFailure.InvalidAuthorization"
    assert check({k: v for k, v in headers.items() if k != "X-TC-Timestamp"}, body) == (
        "AuthFailure.SignatureFailure"
    )
