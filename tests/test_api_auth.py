"""Authentication and authorization: service keys, user tokens, secure-by-default start-up."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from contextlib import asynccontextmanager

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from jwt.warnings import InsecureKeyLengthWarning

from api.auth import mint_token
from api.main import create_app
from api.settings import InsecureConfig, Settings, SettingsError
from devkit.ports import clock_env
from readmodel.settings import StoreSettings
from tests.apiserver import KEY, ROOT, SECRET, auth
from tests.conftest import REDIS_URL

ALICE, BOB = "alice", "bob"
SECOND_KEY = "second-key-" + "s" * 32


@pytest.fixture
async def client(prefix, real_redis):
    app = create_app(Settings(store=StoreSettings(REDIS_URL, prefix), api_keys=(KEY, SECOND_KEY), auth_secret=SECRET))
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            yield c


async def _code(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json()
    return response.status_code, body["error"]["code"] if "error" in body else None


@pytest.mark.parametrize("key", [KEY, SECOND_KEY])
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


def _in(seconds: float) -> int:
    """An epoch time ``seconds`` from now (negative: in the past)."""
    return int(time.time() + seconds)


@pytest.mark.parametrize(
    "claims, secret, algorithm",
    [
        ({"sub": ALICE, "exp": 600}, "another-secret-" + "y" * 40, "HS256"),  # signed with another secret
        ({"sub": ALICE}, SECRET, "HS256"),  # no exp
        ({"exp": 600}, SECRET, "HS256"),  # no sub
        ({"sub": ALICE, "exp": 600}, SECRET, "HS512"),  # another algorithm
    ],
)
async def test_tokens_without_our_signature_exp_and_sub_are_rejected(client, claims, secret, algorithm):
    claims = {**claims, **({"exp": _in(claims["exp"])} if "exp" in claims else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # HS512 wants 64 bytes; irrelevant here
        token = jwt.encode(claims, secret, algorithm=algorithm)
    assert await _code(await client.get(f"/users/{ALICE}/status", headers=auth(token))) == (401, "invalid_credentials")


async def test_an_unsigned_none_algorithm_token_is_rejected(client):
    token = jwt.encode({"sub": ALICE, "exp": _in(600)}, None, algorithm="none")
    assert await _code(await client.get(f"/users/{ALICE}/status", params={"token": token})) == (401, "invalid_credentials")


@asynccontextmanager
async def _client_of(prefix: str, **settings: object):
    app = create_app(Settings(store=StoreSettings(REDIS_URL, prefix), api_keys=(KEY,), auth_secret=SECRET, **settings))
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            yield c


def _token(**claims: object) -> str:
    return jwt.encode({"sub": ALICE, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "iat, exp, leeway, expected",
    [
        (10, 600, 30, (200, None)),  # minted on a host 10 s ahead: within the default leeway
        (-600, -10, 30, (200, None)),  # expired 10 s ago: within the leeway
        (-600, -60, 30, (401, "token_expired")),
        (10, 600, 0, (401, "token_not_yet_valid")),  # no leeway: skew is refused, with its own code
        (-600, -1, 0, (401, "token_expired")),
    ],
)
async def test_exp_and_iat_are_checked_with_the_configured_leeway(prefix, real_redis, iat, exp, leeway, expected):
    async with _client_of(prefix, token_leeway_s=leeway) as c:
        response = await c.get(f"/users/{ALICE}/status", headers=auth(_token(iat=_in(iat), exp=_in(exp))))
    assert (response.status_code, response.json().get("error", {}).get("code")) == expected


def test_the_default_leeway_is_tens_of_seconds():
    assert 10 <= Settings().token_leeway_s < 100


@pytest.mark.parametrize(
    "claims, accepted",
    [
        ({"iat": 0, "exp": 3600}, True),  # exactly the maximum lifetime
        ({"iat": 0, "exp": 3601}, False),
        ({"iat": -7200, "exp": 60}, False),  # backdated: the lifetime counts from iat
        ({"exp": 3500}, True),  # no iat: counted from now
        ({"exp": 100 * 86400}, False),
    ],
)
async def test_a_token_valid_for_longer_than_the_maximum_lifetime_is_refused(prefix, real_redis, claims, accepted):
    now = time.time()
    token = _token(**{name: int(now + value) for name, value in claims.items()})
    async with _client_of(prefix, token_max_lifetime_s=3600) as c:
        response = await c.get(f"/users/{ALICE}/status", headers=auth(token))
    if accepted:
        assert response.status_code == 200
    else:
        assert await _code(response) == (401, "invalid_credentials")
        assert "longer than this server accepts" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "audience, issuer, accepted",
    [("livestatus", "bot", True), (None, "bot", False), ("livestatus", None, False), ("other", "bot", False),
     ("livestatus", "someone-else", False)],
)
async def test_audience_and_issuer_are_required_when_configured(prefix, real_redis, audience, issuer, accepted):
    token = mint_token(SECRET, ALICE, 600, audience=audience, issuer=issuer)
    async with _client_of(prefix, token_audience="livestatus", token_issuer="bot") as c:
        response = await c.get(f"/users/{ALICE}/status", headers=auth(token))
    assert response.status_code == (200 if accepted else 401)


async def test_without_configured_audience_a_token_without_aud_is_accepted(client):
    assert (await client.get(f"/users/{ALICE}/status", headers=auth(mint_token(SECRET, ALICE, 60)))).status_code == 200


def test_building_the_app_without_keys_or_secret_is_refused():
    with pytest.raises(InsecureConfig, match="API_KEYS and AUTH_SECRET"):
        create_app(Settings())
    with pytest.raises(InsecureConfig, match="AUTH_SECRET"):
        create_app(Settings(api_keys=(KEY,)))


def test_a_short_secret_is_refused():
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings(auth_secret="short")


async def test_insecure_dev_mode_serves_without_credentials_and_warns_loudly(prefix, real_redis, caplog):
    app = create_app(Settings(store=StoreSettings(REDIS_URL, prefix), insecure_dev=True))
    assert "INSECURE DEV MODE" in caplog.text
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            assert (await c.get(f"/users/{ALICE}/status")).status_code == 200


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "api", *args], cwd=ROOT, env={"PATH": "/usr/bin:/bin", **clock_env(), **env},
        capture_output=True, text=True, timeout=30
    )


def test_python_m_api_refuses_to_start_without_credentials():
    result = _run("--port", "1", env={})
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "--insecure-dev" in result.stderr


def test_python_m_api_refuses_insecure_dev_when_credentials_are_set():
    result = _run("--port", "1", "--insecure-dev", env={"API_KEYS": KEY, "AUTH_SECRET": SECRET})
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "--insecure-dev" in result.stderr
    assert KEY not in result.stderr and SECRET not in result.stderr


def test_python_m_api_refuses_a_short_service_key_in_one_sentence():
    result = _run("--port", "1", env={"API_KEYS": "short-key", "AUTH_SECRET": SECRET})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "at least 32 characters" in result.stderr
    assert "short-key" not in result.stderr


def test_python_m_api_token_mints_a_token_for_the_user_with_the_ttl():
    result = _run("token", "x402:0xabc", "--ttl", "120", env={"AUTH_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "x402:0xabc" and 110 <= claims["exp"] - time.time() <= 121


def test_python_m_api_token_carries_the_configured_audience_and_issuer_and_refuses_a_ttl_past_the_maximum():
    env = {"AUTH_SECRET": SECRET, "TOKEN_AUDIENCE": "livestatus", "TOKEN_ISSUER": "bot", "TOKEN_MAX_LIFETIME_S": "600"}
    result = _run("token", "alice", "--ttl", "600", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="livestatus", issuer="bot")
    assert claims["sub"] == "alice"
    refused = _run("token", "alice", "--ttl", "601", env=env)
    assert refused.returncode == 2 and "TOKEN_MAX_LIFETIME_S" in refused.stderr


def test_python_m_api_token_needs_a_secret():
    assert _run("token", "alice", env={}).returncode == 2
