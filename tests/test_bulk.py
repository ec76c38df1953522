"""The rules that turn one grant list (and the usage metrics) into check answers, without a server."""

from __future__ import annotations

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
