"""The benchmark harness's pure parts: what it reads from wrk, /proc and HTTP answers, and the figures
it derives. A misread here would put wrong numbers in bench/results/ without any error."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import harness
import ingest_http
import open_loop
import sinks

WRK_REPORT = """Running 15s test @ http://127.0.0.1:8772/v1/notifications
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.12ms    2.31ms    1.20s    73.51%
    Req/Sec     4.97k     1.97k    5.62k    70.00%
  Latency Distribution
     50%  812.00us
     75%    4.56ms
     90%    5.91ms
     99%     1.20s
  74974 requests in 15.01s, 3.08MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   4995.67
Transfer/sec:      3.06MB
"""


def test_wrk_report_read_with_units_and_every_kind_of_error() -> None:
    run = harness.parse_wrk(WRK_REPORT)
    assert run.rps == pytest.approx(4995.67)
    assert run.p50_ms == pytest.approx(0.812)
    assert run.p99_ms == pytest.approx(1200.0)
    assert run.requests == 74974
    assert run.errors == 7 + 2 + 3
    assert run.ok == 74974 - 12


def test_wrk_report_without_percentiles_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="cannot read wrk"):
        harness.parse_wrk("Requests/sec: 10\n")


def test_proc_stat_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime ...
    text = "4242 (python (x) y) S 17 4242 4242 0 -1 4194560 900 0 0 0 1234 56 7 8 20 0 3 0\n"
    assert harness.parse_stat(text) == (17, 1234, 56, 7, 8)


def test_rss_in_bytes_and_none_for_a_zombie() -> None:
    status = "Name:\tpython\nVmPeak:\t  200000 kB\nVmRSS:\t   98304 kB\nThreads:\t3\n"
    assert harness.parse_rss(status) == 98304 * 1024
    assert harness.parse_rss("Name:\tpython\nState:\tZ (zombie)\n") == 0


def test_cpu_delta_counts_a_process_born_in_between_whole() -> None:
    assert harness.cpu_delta({1: 2.0, 2: 1.0}, {1: 2.5, 2: 1.0, 3: 0.25}) == {1: 0.5, 2: 0.0, 3: 0.25}


def test_cpu_of_our_own_process_tree_is_read_from_proc() -> None:
    import os

    spent = harness.cpu_snapshot([os.getpid()])
    assert os.getpid() in spent
    assert spent[os.getpid()] > 0


def test_cpu_by_thread_names_the_event_loop_and_the_sqlite_threads_the_store_named(tmp_path: Path) -> None:
    import asyncio
    import os

    from receiver.stores.sqlite import SqliteStore

    async def busy_store() -> dict[str, float]:
        store = await SqliteStore.open(tmp_path / "threads.db")
        try:
            for _ in range(50):  # some CPU on the writer thread
                await store.add_ingest_counts([(1, "stored", 1)])
            return harness.thread_cpu(os.getpid())
        finally:
            await store.aclose()

    spent = asyncio.run(busy_store())
    assert {"event loop", "sqlite-writer", "sqlite-reader"} <= set(spent)
    assert spent["event loop"] > 0
    assert harness.thread_cpu(2**22 + 1) == {}  # no such process: nothing, not an error


def test_nearest_rank_percentile() -> None:
    values = list(range(1, 101))  # 1..100
    assert harness.percentile(values, 50) == 50
    assert harness.percentile(values, 99) == 99
    assert harness.percentile(values, 100) == 100
    assert harness.percentile([7.0], 99) == 7.0
    assert harness.percentile([], 99) != harness.percentile([], 99)  # NaN


def test_median_of_runs_takes_each_figure_apart() -> None:
    runs = [harness.Run(rps, p50, p99, 100, 0, cpu_us=cpu) for rps, p50, p99, cpu in
            [(10, 1, 30, 200), (30, 2, 10, 100), (20, 3, 20, 300)]]  # fmt: skip
    m = harness.median_run(runs)
    assert (m.rps, m.p50_ms, m.p99_ms, m.cpu_us, m.requests) == (20, 2, 20, 200, 300)


def test_a_response_is_read_only_once_whole_and_the_rest_kept() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    assert open_loop.parse_response(head + b'{"code"') is None
    assert open_loop.parse_response(head[:20]) is None
    status, size = open_loop.parse_response(head + b'{"code":0}HTTP/1.1 4') or (0, 0)
    assert (status, size) == (200, len(head) + 10)
    assert open_loop.parse_response(b"HTTP/1.1 204 No Content\r\n\r\n") == (204, 27)


def test_worker_shares_from_the_pid_on_summary_lines(tmp_path: Path) -> None:
    log = tmp_path / "receiver.log"
    lines = [{"event": "notification", "pid": 11}] * 3 + [{"event": "notification", "pid": 12}]
    lines.append({"event": "listening", "pid": 11})
    log.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\nnot json\n")
    run = harness.Run(1, 1, 1, 4, 0)
    shares, source = ingest_http.worker_shares(log, run, parent=10)
    assert shares == {"11": 0.75, "12": 0.25}
    assert "pid" in source


def test_worker_shares_fall_back_to_cpu_when_lines_carry_no_pid(tmp_path: Path) -> None:
    log = tmp_path / "receiver.log"
    log.write_bytes(orjson.dumps({"event": "notification"}) + b"\n")
    run = harness.Run(1, 1, 1, 4, 0, cpu_by_pid={10: 0.0, 11: 3.0, 12: 1.0})
    shares, source = ingest_http.worker_shares(log, run, parent=10)
    assert shares == {"10 (parent)": 0.0, "11": 0.75, "12": 0.25}
    assert "CPU" in source


def test_a_backlog_that_keeps_growing_is_not_bounded() -> None:
    run = harness.Run(1000, 1, 1, 10_000, 0)
    growing = sinks.Outcome("three", "", run, [sinks.Sample(t, 500 * t, None) for t in range(1, 11)])
    growing.end = sinks.Sample(11, 5500, 5.0)
    assert growing.growth() == pytest.approx(500)
    assert not growing.bounded()
    steady = sinks.Outcome(
        "three", "", run, [sinks.Sample(t, 3000 + (t % 2) * 50, 3.0) for t in range(1, 11)]
    )
    steady.end = sinks.Sample(11, 3000, 3.0)
    assert steady.bounded()  # deep, but no longer growing
    drained = sinks.Outcome("three", "", run, [sinks.Sample(t, 400 * t, None) for t in range(1, 3)])
    drained.end = sinks.Sample(3, 200, 0.2)
    assert drained.bounded()  # less than a second of ingest behind at the end


def test_a_stage_whose_internals_changed_is_reported_not_raised() -> None:
    def renamed() -> float:
        raise AttributeError("module 'receiver.events' has no attribute 'event_id'")

    assert ingest_http.guarded("event id", renamed) == ("event id", "n/a (changed)")
    assert ingest_http.guarded("verify", lambda: 1.5) == ("verify", 1.5)
