"""The two baselines of the catch-up benchmark, each a process of its own reading the same
backlog from the same resume token through real pymongo:

- ``bare``: a pymongo reader that does nothing with the events (the source's ceiling);
- ``naive``: a per-event projector: the same normalization, then one unpipelined Redis command
  at a time (owner lookup, task or balance write, version, announcement) and a checkpoint write
  per event.

``python -m bench.drain {bare,naive} --mongo-url URL --token JSON --count N [--redis-url URL
--prefix P]`` prints one JSON line: ``{"events": N, "seconds": S, "cpu_us_per_event": C}``, timed
from the open stream to the N-th event done (process start and connection excluded, as for the
projector); C is this process's own CPU time over the same stretch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bson import json_util
from pymongo import MongoClient

from projector.normalize import Rules
from projector.projection import Rejected, event_change
from projector.source import Source
from readmodel import LIVE, Layout, TaskChange

from .events import DB, ECONOMY, TASKS


def _stream(url: str, token: dict[str, Any]) -> Any:
    client = MongoClient(url, serverSelectionTimeoutMS=10_000)
    source = Source(client, DB, TASKS, ECONOMY)
    return source, client[DB].watch(source.pipeline(), full_document="updateLookup", resume_after=token,
                                    batch_size=1000, max_await_time_ms=100)


def bare(stream: Any, count: int, _args: argparse.Namespace, _kinds: dict[str, str]) -> int:
    seen = 0
    while seen < count:
        if stream.try_next() is not None:
            seen += 1
    return seen


def naive(stream: Any, count: int, args: argparse.Namespace, kinds: dict[str, str]) -> int:
    import redis

    client = redis.Redis.from_url(args.redis_url)
    layout = Layout(args.prefix)
    rules = Rules()
    seen = 0
    while seen < count:
        event = stream.try_next()
        if event is None:
            continue
        seen += 1
        change = event_change(event, kinds, rules)
        if change is None or isinstance(change, Rejected):
            continue
        doc_id = change.generation_id if isinstance(change, TaskChange) else change.doc_id
        owner_key = layout.task_owner(doc_id) if isinstance(change, TaskChange) else layout.balance_owner(doc_id)
        uid = change.owner or (client.get(owner_key) or b"").decode()
        if not uid:
            continue
        client.set(owner_key, uid)
        if isinstance(change, TaskChange):
            if change.state == LIVE:
                client.hset(layout.tasks(uid), doc_id, change.record)
            else:
                client.hdel(layout.tasks(uid), doc_id)
        else:
            client.hset(layout.user(uid), "balance", change.record)
        version = client.hincrby(layout.user(uid), "version", 1)
        client.publish(layout.channel(uid), version)
        client.hset(layout.checkpoint, "token", json.dumps(stream.resume_token, default=str))
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain")
    parser.add_argument("mode", choices=["bare", "naive"])
    parser.add_argument("--mongo-url", required=True)
    parser.add_argument("--token", required=True, help="the resume token to start after (extended JSON)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="benchnaive")
    args = parser.parse_args(argv)
    source, stream = _stream(args.mongo_url, json_util.loads(args.token))
    started, cpu = time.perf_counter(), time.process_time()
    done = {"bare": bare, "naive": naive}[args.mode](stream, args.count, args, source.kinds)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    stream.close()
    print(json.dumps({"events": done, "seconds": elapsed, "cpu_us_per_event": round(cpu / max(1, done) * 1e6, 1)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
