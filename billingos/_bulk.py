"""Many entitlement answers from one call: a customer's features warmed at once, concurrent misses batched.

BillingOS limits every route per client IP (100 a minute in production), so an answer that costs no
``GET /v1/usage/check`` leaves that route's budget to the questions only it can answer. Two routes
tell about all of a customer's features in one call:

- ``GET /v1/features/entitlements`` (a customer session token, minted once per customer and cached):
  every un-revoked grant with its ``feature_type`` and ``subscription_status``, but no usage, and a
  limit (``properties``) for quota features only;
- ``GET /v1/usage/metrics?customer_id=`` (the secret key): consumption, limit, remaining and period
  end of each quota feature, but no subscription status.

What a check would answer, built from those two (and only from what they really carry)::

    grants of the feature in the list ── none, or more than one ──────▶ not built (a check asks)
        │ exactly one
    subscription_status != "active" ─────────▶ has_access=False, reason="subscription_not_active"
        │ "active"                              (a check's limit, usage and metadata are null then)
    boolean_flag ────────────────────────────▶ has_access=True, feature_type=boolean_flag
    usage_quota with a metric, limit known ──▶ has_access = consumed < limit (else quota_exceeded),
        │                                      limit, usage, remaining, resets_at = period_end
    numeric_limit (its limit is not in the list), a quota without a metric ──▶ not built

A feature not built is left to ``entitlements.check``; a customer BillingOS does not know (404) gets
no answer here, and its checks say ``customer_not_found`` as usual.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping

import anyio
import attrs

from . import _budget
from ._loops import running_asyncio_loop
from ._models import (
    CustomerEntitlement,
    Entitlement,
    EntitlementReason,
    FeatureType,
    SubscriptionStatus,
    UsageMetric,
    UsageMetrics,
)

__all__ = ["Batcher", "answers_from", "metrics_needed"]

logger = logging.getLogger("billingos")

Bulk = Callable[[frozenset[str]], Awaitable[Mapping[str, Entitlement]]]
"""Answers for some features of one customer from one bulk fetch (missing ones: not answerable)."""


def _single_grants(
    grants: Collection[CustomerEntitlement], wanted: Collection[str] | None
) -> dict[str, CustomerEntitlement]:
    """The wanted features granted exactly once (with two grants, which one a check reads is the
    server's choice: the public backend takes the first, the embedded server any active one)."""
    seen: dict[str, CustomerEntitlement | None] = {}
    for grant in grants:
        key = grant.feature_key
        if wanted is not None and key not in wanted:
            continue
        seen[key] = grant if key not in seen else None
    return {key: grant for key, grant in seen.items() if grant is not None}


def metrics_needed(grants: Collection[CustomerEntitlement], wanted: Collection[str] | None) -> bool:
    """Whether a wanted feature is an active usage quota: only then are the usage metrics worth a call.

    Example::

        if metrics_needed(grants, {"api_calls", "sso"}):
            metrics = await billing.usage.metrics("user_42")
    """
    return any(
        g.subscription_status == SubscriptionStatus.ACTIVE and g.feature_type == FeatureType.USAGE_QUOTA
        for g in _single_grants(grants, wanted).values()
    )


def answers_from(
    grants: Collection[CustomerEntitlement],
    metrics: UsageMetrics | None,
    wanted: Collection[str] | None = None,
) -> dict[str, Entitlement]:
    """The check answers the grant list (and the usage metrics) carry, per feature key; the rules are
    in this module's docstring. Features they do not settle are absent.

    Example::

        answers = answers_from(await customer.entitlements.list(), await billing.usage.metrics("user_42"))
        answers["sso"].has_access
    """
    by_key: dict[str, UsageMetric] = {}
    if metrics is not None:
        for item in metrics.metrics:
            by_key.setdefault(item.feature_key, item)
    answers: dict[str, Entitlement] = {}
    for key, grant in _single_grants(grants, wanted).items():
        if grant.subscription_status != SubscriptionStatus.ACTIVE:
            answers[key] = Entitlement(
                feature_key=key, has_access=False, reason=EntitlementReason.SUBSCRIPTION_NOT_ACTIVE
            )
        elif grant.feature_type == FeatureType.BOOLEAN_FLAG:
            answers[key] = Entitlement(
                feature_key=key, has_access=True, feature_type=FeatureType.BOOLEAN_FLAG
            )
        elif grant.feature_type == FeatureType.USAGE_QUOTA:
            metric = by_key.get(key)
            limit = None if metric is None else metric.limit
            if metric is None or limit is None:
                continue
            has_access = metric.consumed < limit
            remaining = metric.remaining
            if remaining is None:
                remaining = max(limit - metric.consumed, 0.0)
            answers[key] = Entitlement(
                feature_key=key,
                has_access=has_access,
                reason=None if has_access else EntitlementReason.QUOTA_EXCEEDED,
                limit=limit,
                usage=metric.consumed,
                remaining=remaining,
                resets_at=metric.period_end,
                feature_type=FeatureType.USAGE_QUOTA,
            )
    return answers


@attrs.define(eq=False)
class _Batch:
    """The misses of one customer collected during one window, and their shared answers."""

    features: set[str]
    done: anyio.Event
    answers: Mapping[str, Entitlement] | None = None


class Batcher:
    """Collects the concurrent cache misses of one customer for ``window`` seconds; when two or more
    features missed, one bulk fetch answers what it can, and each feature it does not answer (or all
    of them, if the bulk fetch fails) is asked alone, as without batching.

    The bulk fetch never waits for a spent rate budget (it falls back at once instead). Batches are
    per customer and per event loop (or thread, off asyncio): a waiter never awaits another loop.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self.bulk_fetches = 0
        """Bulk fetches started (each answered two or more concurrent misses)."""
        self._open: dict[tuple[str, object], _Batch] = {}
        self._lock = threading.Lock()

    async def fetch(
        self,
        customer_id: str,
        feature_key: str,
        single: Callable[[], Awaitable[Entitlement]],
        bulk: Bulk,
    ) -> Entitlement:
        """``feature_key``'s answer: from the bulk fetch of its batch, or ``single()``."""
        loop = running_asyncio_loop()
        bkey = (customer_id, loop if loop is not None else threading.get_ident())
        with self._lock:
            batch = self._open.get(bkey)
            joined = batch is not None
            if batch is None:
                batch = self._open[bkey] = _Batch({feature_key}, anyio.Event())
            else:
                batch.features.add(feature_key)
        if joined:
            await batch.done.wait()
            return await _answer(batch, feature_key, single)
        try:  # whatever happens (a cancelled leader too), the batch's waiters are released
            try:
                await anyio.sleep(self.window)
            finally:
                with self._lock:
                    if self._open.get(bkey) is batch:
                        del self._open[bkey]  # closed: later misses start a batch of their own
            if len(batch.features) > 1:
                batch.answers = await self._bulk(customer_id, frozenset(batch.features), bulk)
        finally:
            batch.done.set()  # with no answers (cancelled, failed): each waiter asks alone
        return await _answer(batch, feature_key, single)

    async def _bulk(
        self, customer_id: str, features: frozenset[str], bulk: Bulk
    ) -> Mapping[str, Entitlement]:
        self.bulk_fetches += 1
        waiting = _budget.WAIT.set(0.0)  # a spent budget: ask feature by feature rather than wait
        try:
            return await bulk(features)
        except Exception as exc:  # the checks go on one by one, as without batching
            logger.debug(
                "bulk entitlement fetch for %s failed (%s: %s); checking its features one by one",
                customer_id, type(exc).__name__, exc,
            )  # fmt: skip
            return {}
        finally:
            _budget.WAIT.reset(waiting)


async def _answer(
    batch: _Batch, feature_key: str, single: Callable[[], Awaitable[Entitlement]]
) -> Entitlement:
    answer = None if batch.answers is None else batch.answers.get(feature_key)
    return answer if answer is not None else await single()
