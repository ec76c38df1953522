"""The blocking facade under stress: many threads, callers that run their own event loop, ``os.fork()`` while
calls are in flight, and interpreter exit with calls in flight.

tests/test_sync.py covers each trap once (16 threads x 12 calls, one call from a running loop, a child that
forks from a quiet parent, exit without ``close()``); these tests push each one: 32 threads x 500 calls with
every result checked, callers on 8 event loops at once, forks taken while 8 threads are mid-call, a forked
child handed the parent's usage recorder, and a process that exits with calls still running in daemon and
non-daemon threads.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
import trio.lowlevel

from billingos import BillingOS, BillingOSError, DeadLetter, NotFoundError, RecorderStats, UsageRecord
from billingos.testing import FakeBillingOS, Fault
from tests._factories import BASE_URL, SECRET, customer_json
from tests._fork import needs_fork, run_in_child

from .conftest import serve_counted, soak_events, wait_until

REPO = Path(__file__).resolve().parents[2]
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"
CUSTOMERS = 8


def seeded_fake(**kwargs: Any) -> FakeBillingOS:
    fake = FakeBillingOS(rate_limits=None, **kwargs)
    fake.add_feature("api_calls", "usage_quota")
    plan = fake.add_product("Unlimited", features={"api_calls": 10**12})
    for n in range(CUSTOMERS):
        fake.add_customer(f"cus_{n}")
        fake.subscribe(f"cus_{n}", plan.price_id)
    for name in ("parent", "child_0", "child_1", "child_2", "exit"):
        fake.add_customer(name)
        fake.subscribe(name, plan.price_id)
    return fake


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "billingos-loop"]


# -- 1. 32 threads x 500 calls on one client ------------------------------------------------------------


def hammer(billing: BillingOS, threads: int, calls: int) -> tuple[Counter[str], list[float], list[str]]:
    """``threads`` threads x ``calls`` calls: every 5th a customer lookup, the others tracks with our keys.

    Returns the units each customer should have, every call's latency, and every mismatch seen.
    """
    start = threading.Barrier(threads)
    expected: Counter[str] = Counter()
    latencies: list[float] = []
    wrong: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        customer, quantity = f"cus_{t % CUSTOMERS}", t % 7 + 1
        mine: list[float] = []
        start.wait(30)
        for i in range(calls):
            began = time.perf_counter()
            if i % 5 == 4:
                found = billing.customers.get_by_external_id(customer)
                if found.external_id != customer:
                    wrong.append(f"thread {t} asked for {customer}, got {found.external_id}")
            else:
                key = f"t{t}-{i}"
                record = billing.usage.track(customer, "api_calls", quantity, idempotency_key=key)
                if not (
                    isinstance(record, UsageRecord)
                    and record.idempotency_key == key
                    and record.quantity == quantity
                    and record.feature_key == "api_calls"
                ):
                    wrong.append(f"thread {t} call {i}: {record!r}")
                with lock:
                    expected[customer] += quantity
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    with ThreadPoolExecutor(threads, thread_name_prefix="caller") as pool:
        for future in [pool.submit(work, t) for t in range(threads)]:
            future.result(timeout=300)
    return expected, latencies, wrong


def describe_latency(latencies: list[float], elapsed: float) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99)] * 1000
    return f"{len(latencies) / elapsed:,.0f} calls/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms"


class MiniBillingOS:
    """Just enough of BillingOS for the thread stress, as an ``httpx2.MockTransport`` handler: it sums tracks
    (one count per idempotency key) and answers customer lookups. 16 000 calls through the embedded server's
    full ASGI stack take ~9 s (~18 s under coverage); the facade under test is the same either way."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.units: Counter[str] = Counter()
        self.keys: set[str] = set()
        self.tracks = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        headers = {"x-request-id": request.headers["x-request-id"]}
        if request.method == "POST" and request.url.path == "/v1/usage/track":
            body = json.loads(request.content)
            with self.lock:
                self.tracks += 1
                if body["idempotency_key"] not in self.keys:
                    self.keys.add(body["idempotency_key"])
                    self.units[body["customer_id"]] += body["quantity"]
                consumed = self.units[body["customer_id"]]
            usage = {"consumed_units": consumed, "limit_units": 10**12, "remaining_units": 10**12 - consumed}
            answer = {
                "success": True,
                "feature_key": body["feature_key"],
                "quantity": body["quantity"],
                "usage": usage,
            }
            return httpx2.Response(201, json=answer, headers=headers)
        prefix = "/customers/external/"
        if request.method == "GET" and request.url.path.startswith(prefix):
            external_id = request.url.path[len(prefix) :]
            return httpx2.Response(200, json=customer_json(external_id=external_id), headers=headers)
        return httpx2.Response(
            404, json={"error": {"code": "RES_NOT_FOUND", "message": "no"}}, headers=headers
        )


def test_32_threads_x_500_calls_on_one_client_all_correct(figure) -> None:
    """16 000 calls on one BillingOS from 32 threads, each result checked against the caller's own request."""
    api = MiniBillingOS()
    http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(api))
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    with BillingOS(SECRET, api_url=BASE_URL, http_client=http_client) as billing:
        expected, latencies, wrong = hammer(billing, 32, 500)
        elapsed = time.monotonic() - started
        new_threads = [t for t in threading.enumerate() if t not in threads_before]
    asyncio.run(http_client.aclose())
    figure(
        f"32 threads x 500 calls on one BillingOS (in-process transport): {api.tracks} tracks + "
        f"{len(latencies) - api.tracks} lookups, {len(wrong)} wrong results, server total "
        f"{sum(api.units.values())} = expected {sum(expected.values())}; "
        f"{describe_latency(latencies, elapsed)}; {len(new_threads)} new thread(s) "
        f"({', '.join(sorted({t.name for t in new_threads}))}); {elapsed:.1f} s"
    )
    assert wrong == []
    assert api.units == expected
    assert api.tracks == len(api.keys) == 32 * 400
    assert [t.name for t in new_threads] == ["billingos-loop"]


@pytest.mark.soak
def test_32_threads_over_loopback_all_correct(figure) -> None:
    """The same over real sockets (stock httpx pool, uvicorn): ~BILLINGOS_SOAK_EVENTS / 3 calls in all.

    Stock httpx's pool is slow with 32 concurrent callers (its per-request pool bookkeeping grows with the
    connections), hence the smaller size; the in-process test above carries the 16 000 calls."""
    calls = max(5, soak_events() // 100)
    fake = seeded_fake()
    with serve_counted(fake.app) as (url, server), BillingOS(fake.secret_key, api_url=url) as billing:
        started = time.monotonic()
        expected, latencies, wrong = hammer(billing, 32, calls)
        elapsed = time.monotonic() - started
        server.wait_idle_blocking()
    counted = {c: fake.usage_of(c, "api_calls") for c in expected}
    figure(
        f"32 threads x {calls} calls over loopback: {len(wrong)} wrong results, server total "
        f"{sum(counted.values()):.0f} = expected {sum(expected.values())}; "
        f"{describe_latency(latencies, elapsed)}; "
        f"peak {server.peak} requests in flight on the server"
    )
    assert wrong == []
    assert counted == dict(expected)


# -- 2. called from inside running event loops ----------------------------------------------------------


def test_called_from_8_running_event_loops_at_once(figure) -> None:
    """Documented: the facade works inside a running loop (Jupyter), by blocking that loop for the call.

    8 threads each run their own asyncio loop; in each, coroutines call the facade while a ticker task
    runs on the same loop. Every call is answered correctly, each loop keeps working between calls (the
    ticker advances), and all of them share the facade's one loop thread and pool.
    """
    fake = seeded_fake()
    with fake.sync_client() as billing:

        async def caller(n: int) -> tuple[int, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            seen: list[int] = []
            for i in range(50):
                customer = f"cus_{(n + i) % CUSTOMERS}"
                assert billing.customers.get_by_external_id(customer).external_id == customer
                billing.track_usage(customer, "api_calls", 1, idempotency_key=f"loop{n}-{i}")
                await asyncio.sleep(0)  # let the ticker run: this loop is alive between blocking calls
                seen.append(ticks)
            task.cancel()
            return seen[-1], sum(1 for a, b in itertools.pairwise(seen) if b > a)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda n: asyncio.run(caller(n)), range(8)))
        assert len(loop_threads()) == 1
    total = sum(fake.usage_of(f"cus_{n}", "api_calls") for n in range(CUSTOMERS))
    figure(
        f"8 threads each in asyncio.run(): 400 lookups + 400 tracks, server total {total:.0f}; loops alive"
    )
    assert total == 400
    assert all(advanced == 49 for _, advanced in results), results


def test_called_from_a_trio_run() -> None:
    fake = seeded_fake()
    with fake.sync_client() as billing:

        async def main() -> str | None:
            await trio.lowlevel.checkpoint()
            return billing.track_usage("cus_0", "api_calls", 3).idempotency_key

        key = trio.run(main)
    assert key
    assert fake.usage_of("cus_0", "api_calls") == 3


def test_a_dead_letter_callback_calling_the_facade_raises_instead_of_deadlocking(figure) -> None:
    """``on_dead_letter`` runs on the facade's own loop thread, where a blocking call would wait for itself:
    it must raise at once, and the recorder must carry on (the letter kept, later events sent)."""
    fake = seeded_fake()
    fake.add_customer("no_subscription")
    raised: list[BaseException] = []
    with fake.sync_client() as billing:

        def replay(letter: DeadLetter) -> None:
            try:
                billing.track_usage(letter.customer_id, letter.feature_key, letter.quantity)
            except BaseException as exc:
                raised.append(exc)

        with billing.usage_recorder(flush_interval=0.05, on_dead_letter=replay) as recorder:
            recorder.record("no_subscription", "api_calls")
            started = time.monotonic()
            recorder.flush(timeout=10)
            took = time.monotonic() - started
            recorder.record("cus_1", "api_calls", 2)
            recorder.flush(timeout=10)
            letters = recorder.dead_letters
    figure(
        f"on_dead_letter calling the facade: {type(raised[0]).__name__} after {took * 1000:.0f} ms, "
        "no deadlock"
    )
    assert len(raised) == 1
    assert isinstance(raised[0], RuntimeError)
    assert "called from its own event loop" in str(raised[0])
    assert [type(x.error) for x in letters] == [NotFoundError]
    assert fake.usage_of("cus_1", "api_calls") == 2


# -- 3. os.fork() while calls are in flight --------------------------------------------------------------


def read_within(fd: int, seconds: float) -> bytes:
    """What is written to the pipe ``fd`` until its writer closes it; ``TimeoutError`` after ``seconds``."""
    data = b""
    until = time.monotonic() + seconds
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            left = until - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                raise TimeoutError(f"nothing more from the child within {seconds} s (got {data!r})")
            chunk = pipe.read(65536)
            if not chunk:
                return data
            data += chunk


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_forks_taken_while_8_threads_are_mid_call(figure) -> None:
    """gunicorn --preload and friends fork whenever they like: here 3 times, while 8 parent threads are in
    the middle of calls (the facade's lock, its loop and its pooled connections all busy). Each child uses
    the client from 4 threads of its own; the parent's threads never notice; every track is counted once."""
    fake = seeded_fake()
    parent_threads, parent_calls, forks = 8, 60, 3
    with serve_counted(fake.app) as (url, server), BillingOS(fake.secret_key, api_url=url) as billing:
        done = Counter[str]()
        lock = threading.Lock()
        errors: list[BaseException] = []

        def parent_work(t: int) -> None:
            try:
                for i in range(parent_calls):
                    billing.track_usage("parent", "api_calls", 1, idempotency_key=f"p{t}-{i}")
                    with lock:
                        done["calls"] += 1
            except BaseException as exc:
                errors.append(exc)

        def child_work(k: int) -> dict[str, Any]:
            customer = f"child_{k}"
            keys: list[str | None] = []

            def work(t: int) -> None:
                for i in range(10):
                    keys.append(
                        billing.track_usage(
                            customer, "api_calls", 1, idempotency_key=f"c{k}-{t}-{i}"
                        ).idempotency_key
                    )

            threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            return {
                "keys": len(set(keys)),
                "alive": sum(t.is_alive() for t in threads),
                "loops": len(loop_threads()),
            }

        workers = [threading.Thread(target=parent_work, args=(t,)) for t in range(parent_threads)]
        for w in workers:
            w.start()
        children: list[tuple[int, dict[str, Any]]] = []
        for k in range(forks):
            wait_until(lambda k=k: done["calls"] >= (k + 1) * 100, "the parent made progress")
            children.append(run_in_child(lambda k=k: child_work(k)))
        for w in workers:
            w.join(60)
        assert not any(w.is_alive() for w in workers)
        server.wait_idle_blocking()
    figure(
        f"{forks} forks while {parent_threads} threads were mid-call: children made "
        f"{sum(r['keys'] for _, r in children)} tracks from 4 threads each (exit codes "
        f"{[code for code, _ in children]}), parent {done['calls']} tracks, {len(errors)} errors; server "
        f"counted parent {fake.usage_of('parent', 'api_calls'):.0f}, children "
        f"{[fake.usage_of(f'child_{k}', 'api_calls') for k in range(forks)]}"
    )
    assert errors == []
    assert [code for code, _ in children] == [0] * forks
    assert [r for _, r in children] == [{"keys": 40, "alive": 0, "loops": 1}] * forks
    assert fake.usage_of("parent", "api_calls") == parent_threads * parent_calls
    assert [fake.usage_of(f"child_{k}", "api_calls") for k in range(forks)] == [40] * forks


@needs_fork
@pytest.mark.filterwarnings(FORK_WARNING)
def test_a_forked_child_cannot_use_the_parents_recorder_but_can_open_its_own(tmp_path: Path, figure) -> None:
    """Regression: the sync recorder's loop task and outbox writer stay in the parent. A child used to accept
    ``record()`` (events silently lost), time out in ``flush()`` and hang for ever in ``close()``; it now
    gets ``recorder_forked`` at once, ``close()`` is a no-op, and it can open a recorder of its own. The
    child's copy of the outbox lock is released, so the parent's lock still dies with the parent."""
    fake = seeded_fake()
    parent_box, child_box = tmp_path / "parent.db", tmp_path / "child.db"

    def in_child(recorder: Any, billing: BillingOS) -> dict[str, Any]:
        outcome: dict[str, Any] = {}
        for name, call in (
            ("record", lambda: recorder.record("child_0", "api_calls", 10)),
            ("flush", lambda: recorder.flush(timeout=2)),
        ):
            began = time.monotonic()
            try:
                call()
                outcome[name] = "no error"
            except BillingOSError as exc:
                outcome[name] = exc.code
            outcome[name + "_s"] = round(time.monotonic() - began, 3)
        outcome["close"] = repr(recorder.close(timeout=1))
        with billing.usage_recorder(outbox=str(child_box), flush_interval=0.05) as own:
            own.record("child_0", "api_calls", 5)
            own.flush(timeout=10)
        return outcome

    with serve_counted(fake.app) as (url, server), BillingOS(fake.secret_key, api_url=url) as billing:
        recorder = billing.usage_recorder(outbox=str(parent_box), flush_interval=0.05)
        go_read, go_write = os.pipe()
        result_read, result_write = os.pipe()
        with recorder:
            recorder.record("parent", "api_calls", 1)
            recorder.flush(timeout=10)
            pid = os.fork()
            if pid == 0:  # the child: report, then stay alive until the parent is done; always os._exit
                code = 1
                try:
                    os.close(go_write)
                    os.close(result_read)
                    os.write(result_write, json.dumps(in_child(recorder, billing)).encode())
                    os.close(result_write)
                    os.read(go_read, 1)  # returns when the parent writes or dies
                    code = 0
                finally:
                    os._exit(code)
            os.close(go_read)
            os.close(result_write)
            try:
                try:
                    outcome = json.loads(read_within(result_read, 20))
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)  # hung (the bug this guards against): fail, do not hang
                    raise
                recorder.record("parent", "api_calls", 1)
                recorder.close(timeout=10)
                # The parent's recorder is closed and the child still lives: the outbox is free again.
                with billing.usage_recorder(outbox=str(parent_box)) as reopened:
                    reopened.record("parent", "api_calls", 1)
            finally:
                os.close(go_write)  # the child leaves
                _, status = os.waitpid(pid, 0)
        server.wait_idle_blocking()
    figure(
        f"forked child with the parent's recorder: record -> {outcome['record']}, "
        f"flush -> {outcome['flush']} "
        f"in {outcome['flush_s'] * 1000:.0f} ms, close -> empty stats; its own recorder counted 5; parent's "
        f"outbox reopened while the child lived"
    )
    assert os.waitstatus_to_exitcode(status) == 0
    assert (outcome["record"], outcome["flush"]) == ("recorder_forked", "recorder_forked")
    assert outcome["flush_s"] < 1
    assert outcome["close"] == repr(RecorderStats())
    assert fake.usage_of("child_0", "api_calls") == 5  # the 10 recorded on the parent's recorder: refused
    assert fake.usage_of("parent", "api_calls") == 3


# -- 4. interpreter exit with calls in flight ------------------------------------------------------------

EXIT_SCRIPT = """
import sys, threading
from billingos import BillingOS

key, url, recorder_box = sys.argv[1:]
billing = BillingOS(key, api_url=url, max_retries=0)
billing.customers.get_by_external_id("exit")  # the loop thread and the pool are up

recorder = billing.usage_recorder(outbox=recorder_box, flush_interval=0.05)
recorder.__enter__()  # left open on purpose, like an app that never closes it
recorder.record("exit", "api_calls", 100)
recorder.flush(timeout=10)
print("warm", flush=True)
sys.stdin.readline()  # the test arms the server's delays now

def held():  # the server holds these 3 s: past the exit, and past the 1 s grace it gives in-flight calls
    billing.customers.get_by_external_id("cus_1")

def finishing(n):  # answered after 1 s: Python waits for non-daemon threads, so these complete
    billing.track_usage("exit", "api_calls", 1, idempotency_key=f"finishing-{n}")
    sys.stdout.write(f"tracked {n}\\n")  # one write: print() from threads can interleave its pieces
    sys.stdout.flush()

def busy_loop():  # a daemon that keeps calling until the end, then finds the client closed
    while True:
        billing.usage.metrics("cus_2")

for _ in range(3):
    threading.Thread(target=held, daemon=True).start()
threading.Thread(target=busy_loop, daemon=True).start()
for n in range(3):
    threading.Thread(target=finishing, args=(n,), daemon=False).start()
print("ready", flush=True)
sys.stdin.readline()  # the test says when: once the server holds every call
print("exiting", flush=True)
"""


def test_interpreter_exit_with_calls_in_flight_is_prompt_and_silent(tmp_path: Path, figure) -> None:
    """Regression: daemon threads still in a call when the interpreter exits used to be woken with
    ``client_closed`` by the exit's shutdown and print "Exception in thread ..." tracebacks. Now they are
    left blocked, as in any blocking socket call, and the process exits 0 with an empty stderr, within the
    1 s grace; non-daemon threads' calls complete (Python waits for those threads first)."""
    fake = seeded_fake()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLINGOS_")}
    env["PYTHONPATH"] = str(REPO)
    with serve_counted(fake.app) as (url, server):
        child = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "error",
                "-c",
                textwrap.dedent(EXIT_SCRIPT),
                fake.secret_key,
                url,
                str(tmp_path / "usage.db"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        try:
            assert child.stdout is not None
            assert child.stdin is not None
            assert child.stdout.readline().strip() == "warm"
            fake.inject("GET /customers/external/{external_id}", Fault.delay(3.0), times=3)
            fake.inject("POST /v1/usage/track", Fault.delay(1.0), times=3)
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ready"
            wait_until(lambda: server.in_flight >= 6, "the 3 held calls and the 3 tracks are in flight")
            go = time.monotonic()
            child.stdin.write("\n")
            child.stdin.flush()
            out, err = child.communicate(timeout=20)
            took = time.monotonic() - go
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        server.wait_idle_blocking()
    figure(
        f"exit with 3 held daemon calls, a busy daemon loop, 3 non-daemon tracks and an open recorder: "
        f"exit code {child.returncode} in {took:.2f} s, stderr {len(err)} chars"
    )
    assert (child.returncode, err) == (0, "")
    assert sorted(out.splitlines()) == ["exiting", "tracked 0", "tracked 1", "tracked 2"]
    assert took < 6
    assert fake.usage_of("exit", "api_calls") == 103  # the recorder's 100, and the 3 finishing tracks
