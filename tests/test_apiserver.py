"""The tests' API server helper leaks nothing when a start fails: such a leak (its stderr pipe,
an unclosed BufferedReader) surfaced as a ResourceWarning in whatever later test garbage
collection happened to run in (issue #23: test_bench_smoke under faketime)."""

from __future__ import annotations

import gc
import warnings

import pytest

from tests.apiserver import Server


def _no_resource_warning_after_gc() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


def test_a_server_that_exits_at_start_is_reaped_and_its_pipe_closed(module_prefix):
    server = Server(module_prefix, env={"API_KEYS": "too-short"})  # refused: keys need 32+ characters
    with pytest.raises(RuntimeError, match="api exited"):
        server.start()
    assert server.proc.returncode not in (None, 0)
    assert server.proc.stderr.closed and "API_KEYS" in server.stderr
    server.stop()
    del server
    _no_resource_warning_after_gc()


def test_a_server_that_does_not_come_up_in_time_is_killed_and_its_pipe_closed(module_prefix):
    server = Server(module_prefix)
    with pytest.raises(RuntimeError, match="did not come up"):
        server.start(timeout_s=0.01)
    assert server.proc.returncode is not None  # killed, not left running
    assert server.proc.stderr.closed
    del server
    _no_resource_warning_after_gc()


def test_stopping_a_server_that_already_exited_closes_its_pipe(module_prefix):
    server = Server(module_prefix).start()
    server.proc.kill()
    server.proc.wait()
    assert server.stop() == 0.0
    assert server.proc.stderr.closed

