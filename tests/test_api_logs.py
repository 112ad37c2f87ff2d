"""No credential reaches a log line: a real server at debug level, used with every kind of credential."""

from __future__ import annotations

import logging
import time
import uuid

import httpx
import pytest

from api import redact
from api.auth import mint_token
from tests.apiserver import KEY, SECRET, SSE, Server, auth


def test_a_run_with_query_cookie_and_header_credentials_logs_none_of_them(module_prefix, tmp_path):
    log_path = tmp_path / "api.log"
    server = Server(module_prefix, log_level="debug", log_path=log_path).start()
    user = f"u{uuid.uuid4().hex[:8]}"
    # Distinct tokens (minted in the same second with the same claims they would be equal).
    names = ("query", "cookie", "header", "stream", "encoded")
    tokens = {name: mint_token(SECRET, user, 600 + i) for i, name in enumerate(names)}
    expired = mint_token(SECRET, user, 10, now=time.time() - 3600)
    garbage = "garbage-credential-" + uuid.uuid4().hex
    base = f"{server.url}/users/{user}/status"
    try:
        assert httpx.get(base, params={"token": tokens["query"]}).status_code == 200
        assert httpx.get(base, cookies={"livestatus_token": tokens["cookie"]}).status_code == 200
        assert httpx.get(base, headers=auth(tokens["header"])).status_code == 200
        assert httpx.get(base, headers=auth(KEY)).status_code == 200
        assert httpx.get(f"{base}?%74oken={tokens['encoded']}").status_code == 200  # `token`, percent-encoded
        assert httpx.get(base, params={"token": expired}).status_code == 401
        assert httpx.get(base, params={"token": garbage}).status_code == 401
        assert httpx.get(f"{server.url}/users/{KEY}/status", headers=auth(KEY)).status_code == 200  # a key as the id
        with httpx.stream("GET", base + "/stream", params={"token": tokens["stream"], "lastEventId": "0"}) as response:
            assert SSE(response).next().event in ("snapshot", "sync")
    finally:
        server.stop()
    logged = log_path.read_text()
    assert f'"GET /users/{user}/status?token=[redacted] HTTP/1.1" 200' in logged  # the access log is on and captured
    assert "lastEventId=0" in logged  # only credentials are redacted
    for name, secret in {**tokens, "expired": expired, "garbage": garbage, "service key": KEY, "secret": SECRET}.items():
        assert secret not in logged, f"the {name} credential reached the log"
    for token in (*tokens.values(), expired):
        assert token.split(".")[1] not in logged  # not even the claims part


@pytest.mark.parametrize(
    "line, kept",
    [
        ('127.0.0.1:5 - "GET /users/a/status?token=abc.def HTTP/1.1" 200', "/users/a/status?token=[redacted] HTTP/1.1"),
        ("GET /x?lastEventId=3&Token=zz&a=1", "?lastEventId=3&Token=[redacted]&a=1"),
        ("GET /x?%74oken=zz", "?%74oken=[redacted]"),
        ("Authorization: Bearer sk-live-123", "Authorization: Bearer [redacted]"),
        ("failed: redis://default:hunter2@cache:6379/0", "redis://default:[redacted]@cache:6379/0"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln in a message", "token [redacted] in a message"),
    ],
)
def test_redact_replaces_the_credential_and_keeps_the_rest(line, kept):
    redacted = redact.redact(line)
    assert kept in redacted
    assert "abc.def" not in redacted and "zz" not in redacted and "hunter2" not in redacted and "c2ln" not in redacted


def test_every_log_record_of_the_process_is_redacted_including_tracebacks(caplog):
    redact.install(["a-literal-service-key-" + "k" * 20])
    log = logging.getLogger("tests.redact")
    with caplog.at_level(logging.INFO, logger="tests.redact"):
        log.info("key %s in a path", "a-literal-service-key-" + "k" * 20)
        try:
            raise ValueError("bad token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")
        except ValueError:
            log.exception("failed with %s", "?token=visible")
    assert "a-literal-service-key" not in caplog.text and "c2ln" not in caplog.text and "visible" not in caplog.text
    assert "key [redacted] in a path" in caplog.text and "?token=[redacted]" in caplog.text
    assert "ValueError: bad token [redacted]" in caplog.text
