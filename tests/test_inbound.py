import hashlib

import pytest

from proxysigv4_core.inbound import BearerTokens, InboundError, is_loopback, parse_token, require_auth

TOKEN = "a-long-enough-token-123"


def test_token_forms_and_constant_time_acceptance():
    tokens = BearerTokens(
        (
            parse_token(TOKEN, "t"),
            parse_token("sha256:" + hashlib.sha256(b"other-token-0000000").hexdigest(), "t"),
        )
    )
    assert tokens.accepts(f"Bearer {TOKEN}")
    assert tokens.accepts(f"bearer  {TOKEN} ")
    assert tokens.accepts("Bearer other-token-0000000")
    for bad in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN):
        assert not tokens.accepts(bad), bad


@pytest.mark.parametrize(
    ("value", "message"), [("short", "at least 16"), ("sha256:abc", "64 hex"), (5, "expected a token")]
)
def test_bad_tokens(value, message):
    with pytest.raises(InboundError, match=message):
        parse_token(value, "t")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.0.2", False),
        ("myhost", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("allow", "hosts", "proxyauth", "tokens", "result"),
    [
        (None, ["127.0.0.1"], False, False, False),
        (None, ["127.0.0.1"], False, True, True),
        (None, [""], False, True, True),
        (None, [""], True, False, True),
        (True, [""], False, False, False),
        (True, ["127.0.0.1"], False, True, False),
        (False, ["127.0.0.1"], True, False, True),
        (False, [""], False, True, True),
        (None, [], False, False, False),
    ],
)
def test_require_auth_decision(allow, hosts, proxyauth, tokens, result):
    assert require_auth(allow, hosts, proxyauth, tokens, "f.yaml") is result


@pytest.mark.parametrize(
    ("allow", "hosts", "message"),
    [
        (None, ["", "127.0.0.1"], "listens on 0.0.0.0 (all interfaces)"),
        (None, ["10.0.0.1"], "listens on 10.0.0.1"),
        (False, ["127.0.0.1"], "allowUnauthenticatedRequests is false"),
    ],
)
def test_require_auth_refusals(allow, hosts, message):
    with pytest.raises(InboundError) as e:
        require_auth(allow, hosts, False, False, "f.yaml")
    assert message in str(e.value) and str(e.value).startswith("f.yaml:")
