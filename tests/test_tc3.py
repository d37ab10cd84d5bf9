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
