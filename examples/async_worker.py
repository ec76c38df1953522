"""An async worker on BillingOS: jobs from a queue, gated and metered, with a graceful shutdown.

A producer puts jobs on an ``asyncio.Queue``; ``--concurrency`` workers take them, check the
customer's entitlement (answered from an ``EntitlementCache`` when fresh), do the work, and record the
usage with the usage recorder, which never waits on the network and sends one coalesced
``usage.track`` per customer and flush window, each counted exactly once.

A metered quota is respected to the unit: BillingOS counts usage when the recorder's batch lands (up
to a flush window after ``record``), so neither it nor the cached entitlement knows about units still
in the recorder. Each customer's :class:`Allowance` adds them back, and a job that would take the
customer past the limit is denied before it runs, instead of being done and then refused by BillingOS
(a dead letter: work given away). Once the last unit is counted, the cache itself answers no (the
recorder's tracks update the cached entitlement). Ctrl-C or SIGTERM stops
the producer, lets the workers finish the queued jobs, and closes the recorder, which sends what it
still holds before the process exits. With ``--outbox``, events not yet confirmed survive a crash and
are sent by the next run.

Run it against the sandbox (see examples/README.md)::

    pip install 'billingos[testing]'
    python -m billingos.testing --port 8787           # another terminal; it prints the two variables:
    export BILLINGOS_API_URL=http://127.0.0.1:8787 BILLINGOS_SECRET_KEY=sk_test_...
    python examples/async_worker.py --jobs 100        # or without --jobs: until Ctrl-C

It prints a progress line every ``--progress`` jobs and a summary at the end (``--json``: one JSON
object on the last line).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence

import attrs

from billingos import AsyncBillingOS, BillingOSError, Entitlement, EntitlementCache, UsageRecorder


@attrs.frozen
class Job:
    """One unit of work: ``units`` of ``feature_key`` for ``customer_id``."""

    number: int
    customer_id: str
    units: int


@attrs.define
class Allowance:
    """How much of a metered quota one customer has left, counting the units still in the recorder.

    ``base`` is the usage BillingOS reported when this run first checked the customer, ``reserved`` the
    units this run has granted since. The usage so far is the larger of BillingOS's figure (other
    processes bill the customer too) and ``base + reserved`` (ours, some not sent yet). A usage lower
    than ``base`` means a new period began: count afresh from there.
    """

    base: float | None = None
    reserved: float = 0

    def reserve(self, entitlement: Entitlement, units: float) -> bool:
        """Grant ``units`` if they fit under the entitlement's limit (always, for an unmetered feature)."""
        if entitlement.limit is None or entitlement.usage is None:
            return True
        if self.base is None or entitlement.usage < self.base:
            self.base, self.reserved = entitlement.usage, 0
        used = max(entitlement.usage, self.base + self.reserved)
        if used + units > entitlement.limit:
            return False
        self.reserved += units
        return True

    def release(self, units: float) -> None:
        """Give back units granted to a job that then recorded nothing."""
        self.reserved -= units


@attrs.define
class Tally:
    """What the worker did, per customer."""

    done: Counter[str] = attrs.field(factory=Counter)
    denied: Counter[str] = attrs.field(factory=Counter)  # not run: no access, or past the quota
    denied_by_billingos: Counter[str] = attrs.field(factory=Counter)  # of which the entitlement said no
    recorded: Counter[str] = attrs.field(factory=Counter)
    failed: Counter[str] = attrs.field(factory=Counter)
    allowances: defaultdict[str, Allowance] = attrs.field(factory=lambda: defaultdict(Allowance))


async def produce(
    queue: asyncio.Queue[Job], customers: Sequence[str], jobs: int | None, stop: asyncio.Event
) -> None:
    """Put ``jobs`` jobs on the queue (forever when None), until ``stop`` is set."""
    for number in itertools.count(1) if jobs is None else range(1, jobs + 1):
        if stop.is_set():
            return
        job = Job(number, customers[number % len(customers)], units=1 + number % 3)
        await queue.put(job)  # waits while the queue is full: backpressure on the producer


async def work(
    queue: asyncio.Queue[Job],
    billing: AsyncBillingOS,
    recorder: UsageRecorder,
    feature_key: str,
    tally: Tally,
    progress: int,
) -> None:
    """Take jobs until cancelled: check access, do the job, record its usage."""
    while True:
        job = await queue.get()
        allowance = tally.allowances[job.customer_id]
        granted = False
        try:
            entitlement = await billing.entitlements.check(job.customer_id, feature_key)
            if not entitlement.has_access:  # from the cache: also once the recorder used the quota up
                tally.denied_by_billingos[job.customer_id] += 1
            granted = entitlement.has_access and allowance.reserve(entitlement, job.units)
            if not granted:  # BillingOS said no, or the job would go past the quota
                tally.denied[job.customer_id] += 1
                continue
            await asyncio.sleep(0.001 * job.units)  # the work itself
            recorder.record(job.customer_id, feature_key, job.units)  # returns at once
        except BillingOSError as exc:  # e.g. a revoked key, or the recorder full after a long outage
            if granted:
                allowance.release(job.units)
            tally.failed[job.customer_id] += 1
            print(f"job {job.number} failed: {exc}", flush=True)
            continue
        finally:
            queue.task_done()
        tally.recorded[job.customer_id] += job.units
        tally.done[job.customer_id] += 1
        done = sum(tally.done.values())
        if progress and done % progress == 0:
            print(f"processed {done} jobs", flush=True)


async def run(args: argparse.Namespace) -> Tally:
    """The worker: returns once the jobs are done (or a signal arrived) and the recorder has drained."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tally = Tally()
    queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=2 * args.concurrency)
    cache = EntitlementCache(ttl=5, on_unavailable="allow")  # keep working while BillingOS is down
    async with (
        AsyncBillingOS(entitlement_cache=cache) as billing,  # key and URL from the environment
        billing.usage_recorder(outbox=args.outbox, flush_interval=args.flush_interval) as recorder,
    ):
        workers = [
            asyncio.create_task(work(queue, billing, recorder, args.feature, tally, args.progress))
            for _ in range(args.concurrency)
        ]
        producer = asyncio.create_task(produce(queue, args.customers, args.jobs, stop))
        print(f"worker started: {args.concurrency} workers, feature {args.feature!r}", flush=True)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({producer, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # the producer puts no more jobs
        await producer
        stopped.cancel()
        await queue.join()  # the jobs already queued are finished, and their usage recorded
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # Leaving the block closes the recorder: it sends what it holds (up to close_timeout).
    print(f"recorder: {recorder.stats}", flush=True)
    for letter in recorder.dead_letters:  # refused by BillingOS (quota, unknown customer): not counted
        tally.recorded[letter.customer_id] -= int(letter.quantity)
        print(f"not counted: {letter.customer_id} {letter.quantity:g} ({letter.error})", flush=True)
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=None, help="stop after N jobs (default: until Ctrl-C)")
    parser.add_argument("--concurrency", type=int, default=4, help="workers taking jobs at once (4)")
    parser.add_argument("--customers", nargs="+", default=["user_1", "user_2"], help="customer ids to bill")
    parser.add_argument("--feature", default="api_calls", help="the metered feature (api_calls)")
    parser.add_argument("--outbox", default=None, help="SQLite file keeping unconfirmed usage across crashes")
    parser.add_argument("--flush-interval", type=float, default=1.0, help="seconds per coalescing window")
    parser.add_argument("--progress", type=int, default=50, help="print a line every N jobs (0: never)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    tally = asyncio.run(run(args))
    summary = {
        "jobs": sum(tally.done.values()),
        "denied": dict(tally.denied),
        "denied_by_billingos": dict(tally.denied_by_billingos),
        "failed": dict(tally.failed),
        "recorded": dict(tally.recorded),
    }
    print(json.dumps(summary) if args.json else f"done: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
