"""Authentication and authorization: service keys, user tokens, secure-by-default start-up."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import httpx
import jwt
from jwt.warnings import InsecureKeyLengthWarning
import pytest
from asgi_lifespan import LifespanManager

from api.auth import mint_token
from api.main import create_app
from api.settings import InsecureConfig, Settings, SettingsError
from tests.apiserver import KEY, ROOT, SECRET, auth
from tests.conftest import REDIS_URL
from tests.net import clock_env

ALICE, BOB = "alice", "bob"


@pytest.fixture
async def client(prefix, real_redis):
    app = create_app(Settings(redis_url=REDIS_URL, key_prefix=prefix, api_keys=(KEY, "second-key"), auth_secret=SECRET))
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            yield c


async def _code(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json()
    return response.status_code, body["error"]["code"] if "error" in body else None


@pytest.mark.parametrize("key", [KEY, "second-key"])
async def test_any_service_key_reads_any_user(client, key):
    assert (await client.get(f"/users/{BOB}/status", headers=auth(key))).status_code == 200


async def test_no_credentials_is_401_missing_credentials(client):
    assert await _code(await client.get(f"/users/{ALICE}/status")) == (401, "missing_credentials")


@pytest.mark.parametrize("token", ["wrong-key", KEY + "x", KEY[:-1], "a.b.c"])
async def test_an_unknown_key_or_garbage_token_is_401_invalid_credentials(client, token):
    assert await _code(await client.get(f"/users/{ALICE}/status", headers=auth(token))) == (401, "invalid_credentials")


async def test_a_user_token_reads_its_own_user_by_header_query_or_cookie(client):
    token = mint_token(SECRET, ALICE, 60)
    assert (await client.get(f"/users/{ALICE}/status", headers=auth(token))).status_code == 200
    assert (await client.get(f"/users/{ALICE}/status", params={"token": token})).status_code == 200
    client.cookies.set("livestatus_token", token)
    assert (await client.get(f"/users/{ALICE}/status")).status_code == 200


async def test_a_user_token_for_another_user_is_403_forbidden(client):
    token = mint_token(SECRET, ALICE, 60)
    assert await _code(await client.get(f"/users/{BOB}/status", headers=auth(token))) == (403, "forbidden")
    assert await _code(await client.get(f"/users/{BOB}/status/stream", params={"token": token})) == (403, "forbidden")


async def test_an_expired_token_is_401_with_its_own_code(client):
    token = mint_token(SECRET, ALICE, 10, now=time.time() - 60)
    assert await _code(await client.get(f"/users/{ALICE}/status", headers=auth(token))) == (401, "token_expired")


@pytest.mark.parametrize(
    "claims, secret, algorithm",
    [
        ({"sub": ALICE, "exp": 2**40}, "another-secret-" + "y" * 40, "HS256"),  # signed with another secret
        ({"sub": ALICE}, SECRET, "HS256"),  # no exp
        ({"exp": 2**40}, SECRET, "HS256"),  # no sub
        ({"sub": ALICE, "exp": 2**40}, SECRET, "HS512"),  # another algorithm
    ],
)
async def test_tokens_without_our_signature_exp_and_sub_are_rejected(client, claims, secret, algorithm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # HS512 wants 64 bytes; irrelevant here
        token = jwt.encode(claims, secret, algorithm=algorithm)
    assert await _code(await client.get(f"/users/{ALICE}/status", headers=auth(token))) == (401, "invalid_credentials")


async def test_an_unsigned_none_algorithm_token_is_rejected(client):
    token = jwt.encode({"sub": ALICE, "exp": 2**40}, None, algorithm="none")
    assert await _code(await client.get(f"/users/{ALICE}/status", params={"token": token})) == (401, "invalid_credentials")


def test_building_the_app_without_keys_or_secret_is_refused():
    with pytest.raises(InsecureConfig, match="API_KEYS and AUTH_SECRET"):
        create_app(Settings())
    with pytest.raises(InsecureConfig, match="AUTH_SECRET"):
        create_app(Settings(api_keys=(KEY,)))


def test_a_short_secret_is_refused():
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings(auth_secret="short")


async def test_insecure_dev_mode_serves_without_credentials_and_warns_loudly(prefix, real_redis, caplog):
    app = create_app(Settings(redis_url=REDIS_URL, key_prefix=prefix, insecure_dev=True))
    assert "INSECURE DEV MODE" in caplog.text
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            assert (await c.get(f"/users/{ALICE}/status")).status_code == 200


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "api", *args], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **clock_env(), **env}, capture_output=True, text=True, timeout=30
    )


def test_python_m_api_refuses_to_start_without_credentials():
    result = _run("--port", "1", env={})
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "--insecure-dev" in result.stderr


def test_python_m_api_token_mints_a_token_for_the_user_with_the_ttl():
    result = _run("token", "x402:0xabc", "--ttl", "120", env={"AUTH_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "x402:0xabc" and 110 <= claims["exp"] - time.time() <= 121


def test_python_m_api_token_needs_a_secret():
    assert _run("token", "alice", env={}).returncode == 2
