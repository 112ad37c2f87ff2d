"""Cheap polls against the real API process: ETag and If-None-Match (304, no body), and the
long-poll (newerThan, waitS) that answers on the user's next version or 304 at its timeout,
bounded like the streams."""

from __future__ import annotations

import threading

import httpx
import pytest

from devkit.waits import wait_for
from readmodel import ReadModel

from .apiserver import Server, apply, auth, balance_change, task_change


@pytest.fixture
def server(prefix, store_env):
    server = Server(prefix, env={**store_env, "STREAMS_PER_USER": "2"}).start()
    yield server
    server.stop()


@pytest.fixture
def readmodel(real_redis, layout) -> ReadModel:
    return ReadModel(real_redis, layout)


def get(server: Server, path: str, headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers={**auth(), **(headers or {})}, timeout=40)


def test_a_snapshot_carries_an_etag_and_if_none_match_gets_a_304_without_a_body(server, readmodel):
    apply(readmodel, task_change("p1", "g1"), balance_change("p1"))
    first = get(server, "/users/p1/status")
    tag = first.headers["ETag"]
    assert tag.startswith('W/"') and f'"{first.json()["version"]}-' in tag
    again = get(server, "/users/p1/status", {"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == tag
    assert get(server, "/users/p1/status", {"If-None-Match": f'"x", {tag}'}).status_code == 304  # one of a list
    apply(readmodel, task_change("p1", "g1", progress=80.0))
    changed = get(server, "/users/p1/status", {"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert changed.json()["liveTasks"][0]["progressPercent"] == 80.0


def test_the_etag_names_the_view_so_one_text_platform_never_validates_another(server, readmodel):
    apply(readmodel, task_change("p2", "g1"))
    tags = {
        view: get(server, path, **params).headers["ETag"]
        for view, (path, params) in {
            "json": ("/users/p2/status", {}),
            "report": ("/users/p2/status-report", {}),
            "telegram": ("/users/p2/status/text", {"platform": "telegram"}),
            "markdownv2": ("/users/p2/status/text", {"platform": "telegram", "markup": "markdownv2"}),
            "discord": ("/users/p2/status/text", {"platform": "discord"}),
        }.items()
    }
    assert len(set(tags.values())) == 5
    text = get(server, "/users/p2/status/text", {"If-None-Match": tags["discord"]}, platform="discord")
    assert text.status_code == 304 and text.content == b""
    assert get(server, "/users/p2/status/text", {"If-None-Match": tags["discord"]}, platform="telegram").status_code == 200


def test_a_long_poll_behind_the_current_version_is_answered_at_once(server, readmodel):
    apply(readmodel, task_change("p3", "g1"))
    reply = get(server, "/users/p3/status", newerThan="0", waitS="30")
    assert reply.status_code == 200 and reply.json()["version"] >= 1


def test_a_long_poll_with_nothing_new_answers_304_at_its_timeout(server, readmodel):
    apply(readmodel, task_change("p4", "g1"))
    version = get(server, "/users/p4/status").json()["version"]
    reply = get(server, "/users/p4/status", newerThan=str(version), waitS="0.3")
    assert reply.status_code == 304 and reply.content == b"" and f'"{version}-' in reply.headers["ETag"]


def test_a_long_poll_is_answered_by_the_next_version(server, readmodel):
    apply(readmodel, task_change("p5", "g1"))
    version = get(server, "/users/p5/status").json()["version"]
    answers: list[httpx.Response] = []
    poll = threading.Thread(target=lambda: answers.append(
        get(server, "/users/p5/status/text", platform="telegram", newerThan=str(version), waitS="25")))
    poll.start()
    wait_for(lambda: server.metric("livestatus_api_subscribed_users") >= 1, 10, "the poll's subscription")
    apply(readmodel, task_change("p5", "g1", progress=91.0))
    poll.join(30)
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["version"] > version and "91%" in answers[0].json()["text"]


def test_a_waiting_long_poll_counts_against_the_users_stream_limit(server, readmodel):
    apply(readmodel, task_change("p6", "g1"))
    version = get(server, "/users/p6/status").json()["version"]
    answers: list[httpx.Response] = []
    polls = [threading.Thread(target=lambda: answers.append(get(server, "/users/p6/status", newerThan=str(version),
                                                                 waitS="20"))) for _ in range(2)]
    for poll in polls:
        poll.start()
    # Both waiting, so both hold a slot: a probe sent earlier could take the second slot itself.
    wait_for(lambda: server.metric("livestatus_api_waiting_polls") == 2, 10, "both polls waiting")
    # Two slots taken (STREAMS_PER_USER=2): a third poll, or a stream, is refused; both are told when to retry.
    third = get(server, "/users/p6/status", newerThan=str(version), waitS="0.2")
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_streams" and third.headers["Retry-After"]
    assert server.metric("livestatus_api_waiting_polls") == 2
    stream = httpx.get(server.url + "/users/p6/status/stream", headers=auth(), timeout=10)
    assert stream.status_code == 429 and stream.json()["error"]["code"] == "too_many_streams"
    apply(readmodel, task_change("p6", "g1", progress=99.0))
    for poll in polls:
        poll.join(30)
    assert [a.status_code for a in answers] == [200, 200]
    assert server.metric("livestatus_api_waiting_polls") == 0
    assert get(server, "/users/p6/status", newerThan=str(version + 1), waitS="0.1").status_code == 304  # slots back


BAD_POLLS = [{"newerThan": "-1"}, {"newerThan": "x"}, {"newerThan": "1", "waitS": "31"}, {"newerThan": "1", "waitS": "0"},
             {"waitS": "5"}, {"newerThan": "1", "waitS": "nan"}]


def test_bad_long_poll_parameters_are_400s_in_the_one_error_shape(server):
    for params in BAD_POLLS:
        reply = get(server, "/users/p7/status", **params)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_request", params
