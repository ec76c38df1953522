"""The rules that turn one grant list (and the usage metrics) into check answers, without a server."""

from __future__ import annotations

import pytest

from billingos._bulk import answers_from, metrics_needed
from billingos._models import CustomerEntitlement, FeatureType, SubscriptionStatus, UsageMetric, UsageMetrics


def grant(key: str, kind: str, status: str = "active") -> CustomerEntitlement:
    return CustomerEntitlement(
        feature_key=key, feature_type=FeatureType(kind), subscription_status=SubscriptionStatus(status)
    )


def test_a_feature_granted_twice_is_left_to_a_check() -> None:
    grants = [grant("sso", "boolean_flag"), grant("sso", "boolean_flag", "trialing")]
    assert answers_from(grants, None) == {}
    assert not metrics_needed([grant("q", "usage_quota"), grant("q", "usage_quota")], None)


def test_a_quota_without_a_metric_or_a_limit_is_left_to_a_check() -> None:
    grants = [grant("api_calls", "usage_quota"), grant("tokens", "usage_quota")]
    metrics = UsageMetrics(
        customer_id="c", metrics=(UsageMetric(feature_key="tokens", consumed=3, limit=None),)
    )
    assert metrics_needed(grants, None)
    assert answers_from(grants, metrics) == {}


def test_a_numeric_limit_is_left_to_a_check_and_wanted_filters() -> None:
    grants = [grant("seats", "numeric_limit"), grant("sso", "boolean_flag"), grant("x", "boolean_flag")]
    assert sorted(answers_from(grants, None)) == ["sso", "x"]
    assert sorted(answers_from(grants, None, {"sso", "seats"})) == ["sso"]
    assert not metrics_needed([grant("q", "usage_quota", "past_due")], None)  # no access: no usage needed


@pytest.mark.anyio
async def test_a_cancelled_batch_leader_releases_its_waiters_to_ask_alone() -> None:
    import anyio

    from billingos._bulk import Batcher
    from billingos._models import Entitlement

    batcher = Batcher(window=3600)  # the leader would wait an hour: it is cancelled instead
    asked: list[str] = []

    async def single(key: str) -> Entitlement:
        asked.append(key)
        return Entitlement(feature_key=key, has_access=True)

    async def bulk(features: frozenset[str]) -> dict[str, Entitlement]:
        raise AssertionError("no bulk fetch after a cancelled window")

    answers: list[Entitlement] = []
    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await batcher.fetch("c", "a", lambda: single("a"), bulk)

        async def join() -> None:
            answers.append(await batcher.fetch("c", "b", lambda: single("b"), bulk))

        tg.start_soon(lead)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(join)
        await anyio.wait_all_tasks_blocked()
        leader.cancel()
    assert asked == ["b"]
    assert [a.feature_key for a in answers] == ["b"]
