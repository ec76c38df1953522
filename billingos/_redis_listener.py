"""The fleet's news on Redis pub/sub: one subscription per cache, so tracks reach other processes' memory.

A process that applies a track (or an invalidation) to the shared entry publishes it on the store's
channel in the same ``MULTI`` as the write (``RedisStore.tracked``/``invalidate``). Every other process
whose :class:`~billingos.EntitlementCache` has a store listens on that channel and refreshes (or drops)
what its memory holds for that customer and feature::

    first miss / track / put of the cache, on an asyncio loop ─▶ start the listener task (once per loop)
    listener: SUBSCRIBE (bounded by the store's timeout), wait for its confirmation ─▶ listening
        every message ─▶ deliver(data)  (the cache applies it under its lock; a bad one is skipped)
        connection lost / Redis down ─▶ not listening, counted and logged once per outage;
                                        subscribe again every ``retry_interval`` seconds
    client closed (``aclose``) or its loop ending ─▶ cancelled; the pub/sub connection is closed

A memory hit never touches Redis: the listener works beside the checks, not in their path. While it is
not listening, memory entries live to their ``ttl`` (as they would without it). On the blocking client
the listener keeps the client's loop running on its own thread (``_loops.keep_running``), so messages
are applied between calls too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._logs import logger
from ._loops import kept_running

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["Listener"]


class Listener:
    """One subscription to ``channel``, run by :meth:`run` in a task of its own; never raises an Exception.

    Example (what ``EntitlementCache`` does)::

        listener = Listener(client, "billingos:ab12:t", print, timeout=0.25, retry_interval=5.0, failed=...)
        task = asyncio.get_running_loop().create_task(listener.run())
        await listener.settled.wait()   # subscribed, or the first attempt failed
    """

    __slots__ = (
        "_channel",
        "_client",
        "_deliver",
        "_failed",
        "_lost",
        "_retry",
        "_stopping",
        "_timeout",
        "listening",
        "settled",
    )

    def __init__(
        self,
        client: redis.asyncio.Redis,
        channel: str,
        deliver: Callable[[bytes], None],
        *,
        timeout: float,
        retry_interval: float,
        failed: Callable[[BaseException], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._deliver = deliver
        self._timeout = timeout
        self._retry = retry_interval
        self._failed = failed
        self._lost = False  # a failure was logged and no subscription succeeded since
        self._stopping = False
        self.listening = False
        """``True`` while the subscription is in place at the server."""
        self.settled = asyncio.Event()
        """Set once the first attempt to subscribe has succeeded or failed."""

    async def run(self) -> None:
        """Subscribe, deliver messages, resubscribe after a failure; until cancelled."""
        with kept_running():
            try:
                while not self._stopping:
                    await self._subscribed_once()
                    if not self._stopping:
                        await anyio.sleep(self._retry)
            finally:
                self.listening = False
                self.settled.set()

    async def _subscribed_once(self) -> None:
        """One subscription, from SUBSCRIBE until its connection fails (returns) or the task is cancelled."""
        pubsub: Any = self._client.pubsub()
        try:
            with anyio.fail_after(self._timeout):
                await pubsub.subscribe(self._channel)
                while True:  # the confirmation: the server now sends us every message published
                    reply = await pubsub.get_message(timeout=self._timeout)
                    if reply is not None and reply.get("type") == "subscribe":
                        break
            self.listening = True
            self.settled.set()
            if self._lost:
                self._lost = False
                logger.info("listening again for the fleet's tracks on Redis")
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message.get("type") == "message":
                    try:
                        self._deliver(message["data"])
                    except Exception as exc:  # one bad message must not end the subscription
                        logger.debug(
                            "ignored a message of the fleet's channel (%s: %s)", type(exc).__name__, exc
                        )
        except Exception as exc:  # Redis down, the connection lost, a timeout: answer from memory meanwhile
            self.listening = False
            self.settled.set()
            if self._stopping:  # a cancellation redis-py reported as a lost connection: not a failure
                return
            self._failed(exc)  # counted, and the store skips Redis for a while (it logs that once)
            if not self._lost:
                self._lost = True
                logger.warning(
                    "not listening for the fleet's tracks on Redis (%s): this process's cached answers "
                    "live to their ttl; subscribing again every %.0f s",
                    type(exc).__name__, self._retry,
                )  # fmt: skip
        finally:
            self.listening = False
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                with anyio.move_on_after(self._timeout):
                    await pubsub.aclose()  # disconnects: the server drops the subscription

    def stop(self, task: asyncio.Task[None]) -> None:
        """End :meth:`run` (in ``task``): no new subscription, and the current one is cancelled. A flag as
        well as a cancellation: redis-py may turn a cancellation mid-read into a ``ConnectionError``."""
        self._stopping = True
        task.cancel()

    def __repr__(self) -> str:
        return f"<Listener channel={self._channel!r} listening={self.listening}>"
