"""Property: whatever order of duplicates and crash replays the worker delivers changes in, the
read model ends equal to a plain in-memory projection of the final documents; a live task's
``progressMovedAt`` (history: when its status or progress last moved, as the changes applied saw
it) is the time of a version of the document with its final status and progress."""

import json
import uuid

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projector.normalize import Rules, Task, normalize_balance, normalize_task
from projector.projection import ECONOMY, TASKS, document_change
from readmodel import Layout, ReadModel, View, position, read_snapshot
from readmodel.records import live_task_record

from .conftest import store_client

RULES = Rules()
USERS = ["u0", "u1", "x402:0xabc"]
WALL_MS = 1_795_000_000_000
READ_AT = WALL_MS + 1000  # long before anything goes stale

task_docs = st.fixed_dictionaries(
    {
        "masterAccountId": st.sampled_from(USERS),
        "status": st.sampled_from(["pending", "processing", "Running", "completed", "failed", "brewing"]),
        "toolId": st.sampled_from(["flux", "sdxl"]),
        "requestTimestamp": st.just("2026-11-25T08:00:00Z"),
    },
    optional={"progress": st.sampled_from([0.3, "47%", 80, None, "junk"]), "costUsd": st.sampled_from(["0.01", 2])},
)
task_events = st.tuples(st.just(TASKS), st.sampled_from(["g0", "g1", "g2", "g3"]), st.none() | task_docs)
# One economy document per user, as on the platform.
economy_events = st.sampled_from(range(len(USERS))).flatmap(
    lambda i: st.tuples(
        st.just(ECONOMY),
        st.just(f"e{i}"),
        st.none() | st.fixed_dictionaries({"masterAccountId": st.just(USERS[i]),
                                           "usdCredit": st.sampled_from(["0", "1.25", "0.012469"]),
                                           "exp": st.integers(0, 50)}),
    )
)
# Every task version is stamped a minute after the one before (as a worker's heartbeat would),
# so progressMovedAt tells versions apart; time never goes back, like the deadlines assume.
histories = st.lists(task_events | economy_events, min_size=1, max_size=30).map(
    lambda events: [(kind, doc_id, {**doc, "updatedAt": f"2026-11-25T08:{i:02d}:00Z"} if kind == TASKS and doc else doc)
                    for i, (kind, doc_id, doc) in enumerate(events)])


def live_record(doc_id, doc):
    task = normalize_task({"_id": doc_id, **doc}, RULES)
    if not (isinstance(task, Task) and task.live):
        return None
    record = json.loads(live_task_record(task.visible, None, WALL_MS + RULES.stale_after_ms))
    record.pop("staleAt")
    return task.owner, record


def moved_times(history):
    """Per task: the progressMovedAt of every version with the final version's status and progress."""
    times = {}
    for kind, doc_id, doc in history:
        if kind == TASKS and doc is not None and (projected := live_record(doc_id, doc)) is not None:
            times.setdefault(doc_id, []).append(projected[1])
    last = {doc_id: records[-1] for doc_id, records in times.items()}
    return {doc_id: {r["progressMovedAt"] for r in records
                     if (r["status"], r["progressPercent"]) == (last[doc_id]["status"], last[doc_id]["progressPercent"])}
            for doc_id, records in times.items()}


def expected_state(history):
    """The plain model: the last document per id, projected directly (``progressMovedAt`` aside)."""
    docs = {}
    for kind, doc_id, doc in history:
        docs[(kind, doc_id)] = None if doc is None else {"_id": doc_id, **doc}
    state = {uid: {"tasks": {}, "balance": {"usdCredit": "0", "points": 0, "exp": 0}} for uid in USERS}
    for (kind, doc_id), doc in docs.items():
        if doc is None:
            continue
        if kind == TASKS:
            task = normalize_task(doc, RULES)
            if isinstance(task, Task) and task.live:
                record = json.loads(live_task_record(task.visible, None, WALL_MS + RULES.stale_after_ms))
                record.pop("staleAt")
                record.pop("progressMovedAt")
                state[task.owner]["tasks"][doc_id] = record
        else:
            balance = normalize_balance(doc, RULES)
            state[balance.owner]["balance"] = {"usdCredit": balance.usd_credit, "points": balance.points,
                                               "exp": balance.exp}
    return state


def as_changes(history, indexes):
    changes = []
    for i in indexes:
        kind, doc_id, doc = history[i]
        full = None if doc is None else {"_id": doc_id, **doc}
        changes.append(document_change(kind, full, doc_id, position(1_795_000_000 + i, 0), WALL_MS, RULES))
    return changes


@st.composite
def deliveries(draw, history):
    """Batches of event indexes as a crashing, retrying worker delivers them: (indexes, cut),
    where a cut batch had only its first `cut` Redis commands executed before the crash."""
    n = len(history)
    batches, done = [], 0
    while done < n:
        size = draw(st.integers(1, n - done))
        if draw(st.integers(0, 3)) == 3:  # crash in the middle of writing this batch
            batches.append((list(range(done, done + size)), draw(st.integers(0, 3 * size))))
        else:
            batches.append((list(range(done, done + size)), None))
            done += size
        if draw(st.booleans()):  # crash: replay from an older checkpoint
            batches.append((list(range(draw(st.integers(0, max(done - 1, 0))), done)), None))
    if draw(st.booleans()):  # a stale worker replays an old prefix after everything
        batches.append((list(range(draw(st.integers(1, n)))), None))
    return batches


def observed_state(client, layout, moved):
    """The snapshots, each live task's progressMovedAt checked against ``moved`` and left out."""
    state = {}
    for uid in USERS:
        snapshot = read_snapshot(client, layout, uid, View(READ_AT))
        for task in snapshot["liveTasks"]:
            assert task.pop("progressMovedAt") in moved.get(task["generationId"], ()), task
        state[uid] = {"tasks": {t["generationId"]: t for t in snapshot["liveTasks"]}, "balance": snapshot["balance"]}
    return state


def assert_every_live_task_has_a_deadline(client, layout):
    """The sweeper wakes for a user no later than their earliest live task goes stale."""
    for uid in USERS:
        stale_ats = [json.loads(v)["staleAt"] for v in client.hvals(layout.tasks(uid))]
        if stale_ats:
            deadline = client.zscore(layout.deadlines, uid)
            assert deadline is not None and deadline <= min(stale_ats), uid


def run(client, history, batches):
    layout = Layout(f"t{uuid.uuid4().hex[:10]}")
    model = ReadModel(client, layout)
    try:
        for batch, cut in batches:
            changes = [c for c in as_changes(history, batch) if not hasattr(c, "reason")]
            if cut is None:
                model.apply(changes, "2026-11-25T09:00:00.000Z")
                continue
            plan = model.plan(changes, "2026-11-25T09:00:00.000Z")
            model.run([*plan.steps, *plan.after][:cut])
        assert_every_live_task_has_a_deadline(client, layout)
        return observed_state(client, layout, moved_times(history))
    finally:
        keys = list(client.scan_iter(match=f"{layout.prefix}:*", count=10_000))  # a shared Redis may hold many keys
        if keys:
            client.delete(*keys)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_delivery_with_duplicates_and_replays_converges_fakeredis(data):
    history = data.draw(histories)
    batches = data.draw(deliveries(history))
    assert run(fakeredis.FakeRedis(), history, batches) == expected_state(history)


pytestmark = pytest.mark.both_backends  # The real-Redis property runs on a single Redis and on a Redis Cluster.


@pytest.fixture(scope="module")
def shared_real_redis(store_env):
    client = store_client(store_env)
    yield client
    client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_delivery_with_duplicates_and_replays_converges_real_redis(shared_real_redis, data):
    history = data.draw(histories)
    batches = data.draw(deliveries(history))
    assert run(shared_real_redis, history, batches) == expected_state(history)
