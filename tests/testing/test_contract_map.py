"""CONTRACT.md rule -> the conformance test(s) covering it, for the issue's closing note.

``test_every_mapped_test_exists`` keeps this table honest: a renamed or deleted test fails it.
"""

from __future__ import annotations

import importlib

import pytest

CONTRACT_MAP: dict[str, list[str]] = {
    # §1 Connection
    "§1 auth: Authorization: Bearer <sk_test_ key> accepted": [
        "test_conformance_connection::test_auth_bearer_sk_test_key_is_accepted",
        "test_conformance_connection::test_auth_added_sk_live_key_is_accepted",
    ],
    "§1 auth: missing key -> 401 AUTH_INVALID_TOKEN": [
        "test_conformance_connection::test_auth_missing_key_is_401_auth_invalid_token",
    ],
    "§1 auth: unknown/malformed key -> 401 AUTH_INVALID_TOKEN, request not executed": [
        "test_conformance_connection::test_auth_unknown_or_malformed_key_is_401_auth_invalid_token",
        "test_conformance_connection::test_auth_rejected_request_is_not_executed",
        "test_conformance_connection::test_auth_other_fake_keys_are_unknown",
    ],
    "§1 request id: X-Request-Id echoed in x-request-id": [
        "test_conformance_connection::test_request_id_is_echoed_in_x_request_id",
        "test_conformance_connection::test_request_id_is_echoed_on_401",
        "test_conformance_connection::test_request_id_is_echoed_on_204",
        "test_loopback::test_loopback_request_id_is_echoed_and_generated",
    ],
    "§1 request id: generated (req_ + 24 hex) when absent": [
        "test_conformance_connection::test_request_id_is_generated_when_absent",
        "test_loopback::test_loopback_request_id_is_echoed_and_generated",
    ],
    "§1 success decoration: top-level requestId on every returned object": [
        "test_conformance_connection::test_request_id_is_added_to_every_success_object",
    ],
    "§1 body: JSON, UTF-8": [
        "test_conformance_connection::test_json_every_success_body_is_application_json",
        "test_conformance_connection::test_json_malformed_body_is_400_envelope",
        "test_conformance_connection::test_json_utf8_round_trip",
        "test_conformance_connection::test_json_body_is_read_only_as_application_json",
    ],
    "§1 body: server body limit 100 kB": [
        "test_conformance_connection::test_body_limit_100_kb_is_accepted",
        "test_conformance_connection::test_body_limit_over_100_kb_is_413_and_not_executed",
        "test_loopback::test_loopback_body_limit_is_100_kb",
    ],
    "§1 dates: a date may arrive as {}, null or ISO-8601": [
        "test_conformance_connection::test_dates_are_iso_strings_empty_objects_or_null",
    ],
    "§1 dates: mangle_dates=True turns every date into {}": [
        "test_conformance_connection::test_dates_mangle_dates_turns_every_date_into_empty_object",
    ],
    # §2 Errors
    "§2 envelope {error{code,message,details?,requestId,timestamp}, statusCode == HTTP status}": [
        "test_conformance_errors::test_error_envelope_shape_for_rule_errors",
        "test_conformance_errors::test_error_envelope_shape_for_401",
        "test_conformance_errors::test_error_envelope_shape_for_429",
        "test_conformance_errors::test_error_envelope_shape_for_unknown_route",
        "test_conformance_errors::test_error_status_code_equals_http_status_and_nothing_is_executed",
    ],
    "§2 status -> code table (400/422 VAL_, 401 AUTH_, 403 AUTHZ_, 404 RES_, 409, 429, >=500 SYS_*)": [
        "test_conformance_errors::test_error_envelope_status_code_table_for_injected_errors",
        "test_faults::test_fault_error_answers_the_envelope_without_processing",
    ],
    "§2 details only sometimes (validation: details.fieldErrors)": [
        "test_conformance_errors::test_error_details_present_only_for_validation",
    ],
    "§2 error.requestId is the request's id": [
        "test_conformance_errors::test_error_request_id_is_the_sent_one",
        "test_faults::test_fault_error_echoes_the_request_id",
    ],
    "§2 a proxy may answer HTML: status decides": [
        "test_faults::test_fault_html_is_a_proxy_page_not_processed",
    ],
    # §3 Rate limits
    "§3 every response carries X-RateLimit-Limit/Remaining/Reset and -scoped variants": [
        "test_conformance_limits::test_rate_limit_headers_on_every_response",
        "test_conformance_limits::test_rate_limit_headers_on_204",
        "test_conformance_limits::test_rate_limit_headers_on_401",
        "test_conformance_limits::test_rate_limit_headers_on_429",
        "test_loopback::test_loopback_delay_and_rate_limit_headers",
    ],
    "§3 X-RateLimit-Reset is seconds until reset, not an epoch": [
        "test_conformance_limits::test_rate_limit_reset_is_seconds_until_window_end_not_epoch",
    ],
    "§3 per client IP and per route": [
        "test_conformance_limits::test_rate_limit_remaining_counts_down_per_route",
        "test_conformance_limits::test_rate_limit_is_per_route_template_not_per_path",
        "test_conformance_limits::test_rate_limit_is_per_client_ip",
    ],
    "§3 over the limit -> 429 RATE_LIMIT_EXCEEDED with Retry-After seconds": [
        "test_conformance_limits::test_rate_limit_exceeded_is_429_with_retry_after_seconds",
        "test_conformance_limits::test_rate_limit_injected_429_keeps_its_retry_after",
    ],
    "§3 a 429'd request was not executed": [
        "test_conformance_limits::test_rate_limited_track_is_not_executed",
        "test_conformance_limits::test_rate_limited_create_is_not_executed",
    ],
    "§3 POST /v1/usage/track also limited per customer (1000/min)": [
        "test_conformance_limits::test_rate_limit_track_per_customer",
        "test_conformance_limits::test_rate_limit_defaults_are_100_per_route_and_1000_per_customer",
    ],
    "§3 100 requests/min per route (window moves with the clock)": [
        "test_conformance_limits::test_rate_limit_defaults_are_100_per_route_and_1000_per_customer",
        "test_conformance_limits::test_rate_limit_window_reopens_after_window_seconds",
    ],
    "issue: limits are settings (RateLimits), off with rate_limits=None": [
        "test_conformance_limits::test_rate_limit_window_is_configurable",
        "test_conformance_limits::test_rate_limits_none_switches_throttling_off",
    ],
    # §4 Idempotency
    "§4 replayed idempotency_key returns the first call's usage, counts nothing": [
        "test_conformance_idempotency::test_idempotency_replay_returns_first_usage_and_counts_nothing",
        "test_conformance_idempotency::test_idempotency_replay_with_other_quantity_still_returns_first",
        "test_conformance_idempotency::test_idempotency_replay_is_not_refused_when_the_quota_is_now_full",
    ],
    "§4 idempotency is per customer": [
        "test_conformance_idempotency::test_idempotency_is_per_customer",
    ],
    "§4 idempotency lasts 24 hours": [
        "test_conformance_idempotency::test_idempotency_expires_after_24_hours",
    ],
    "§4 no Idempotency-Key header; nothing else dedupes": [
        "test_conformance_idempotency::test_idempotency_key_header_is_ignored",
        "test_conformance_idempotency::test_idempotency_tracks_without_key_always_count",
        "test_conformance_idempotency::test_idempotency_none_for_session_tokens_a_retry_mints_a_second_token",
        "test_conformance_idempotency::test_idempotency_none_for_customers_a_retried_create_is_409",
    ],
    # §5 Session tokens
    "§5 POST /v1/session-tokens -> 201, camelCase {sessionToken, expiresAt, allowedOperations?}": [
        "test_conformance_session_tokens::test_session_token_create_is_201_camel_case",
        "test_conformance_session_tokens::test_session_token_create_echoes_allowed_operations",
    ],
    "§5 expiresAt is always {} on the wire": [
        "test_conformance_session_tokens::test_session_token_expires_at_is_always_empty_object",
    ],
    "§5 token format bos_session_<base64url JSON, no padding>.<hex HMAC-SHA256>, payload claims": [
        "test_conformance_session_tokens::test_session_token_format_and_payload",
        "test_conformance_session_tokens::test_session_token_payload_without_organization",
        "test_conformance_session_tokens::test_session_token_signature_is_checked",
        "test_conformance_session_tokens::test_session_token_expires_by_the_clock",
    ],
    "§5 expiresIn int 60..86400, default 3600": [
        "test_conformance_session_tokens::test_session_token_default_expires_in_is_3600",
        "test_conformance_session_tokens::test_session_token_expires_in_out_of_bounds_is_400",
        "test_conformance_session_tokens::test_session_token_expires_in_bounds_are_inclusive",
    ],
    "§5 externalUserId required, <=255; field types": [
        "test_conformance_session_tokens::test_session_token_external_user_id_required_max_255",
        "test_conformance_session_tokens::test_session_token_field_types_are_validated",
    ],
    "§5 unknown fields -> 400 with details.fieldErrors": [
        "test_conformance_session_tokens::test_session_token_unknown_fields_are_400_with_field_errors",
    ],
    "§5 DELETE /v1/session-tokens/{jti} -> 200 message; 404 unknown or already revoked": [
        "test_conformance_session_tokens::test_session_token_revoke_is_200_then_404",
        "test_conformance_session_tokens::test_session_token_revoke_unknown_is_404",
        "test_conformance_session_tokens::test_session_token_revoke_leaves_other_tokens_alive",
    ],
    # §5 Usage and entitlements
    "§5 usage customer_id is the external id, never the internal UUID": [
        "test_conformance_usage::test_usage_customer_id_is_the_external_id_never_the_internal_id",
    ],
    "§5 check: unknown customer -> 404 Customer not found": [
        "test_conformance_usage::test_check_unknown_customer_is_404_customer_not_found",
    ],
    "§5 check: no grant -> no_active_subscription": [
        "test_conformance_usage::test_check_without_grant_is_no_active_subscription",
        "test_conformance_usage::test_check_canceled_subscription_has_no_access",
    ],
    "§5 check: trialing/past_due/incomplete (not active) -> subscription_not_active": [
        "test_conformance_usage::test_check_subscription_not_active",
    ],
    "§5 check: consumed >= limit -> quota_exceeded, has_access false": [
        "test_conformance_usage::test_check_consumed_at_limit_is_quota_exceeded",
    ],
    "§5 check: metadata.type boolean_flag / numeric_limit / usage_quota; remaining, resets_at": [
        "test_conformance_usage::test_check_boolean_flag",
        "test_conformance_usage::test_check_numeric_limit",
        "test_conformance_usage::test_check_usage_quota_reports_usage_remaining_and_resets_at",
        "test_conformance_usage::test_check_period_rolls_over_and_usage_resets",
        "test_conformance_usage::test_check_requires_customer_id_and_feature_key",
    ],
    "§5 track -> 201 {success, feature_key, quantity, recorded_at, usage{...}}": [
        "test_conformance_usage::test_track_is_201_with_usage_shape",
        "test_conformance_usage::test_track_body_fields_are_validated",
        "test_conformance_usage::test_track_uses_the_active_grant_among_several_subscriptions",
    ],
    "§5 track: numbers may be non-integers such as 1000.000000": [
        "test_conformance_usage::test_track_numbers_may_be_non_integer_decimals",
    ],
    "§5 track: quantity a JSON number > 0, fractions allowed": [
        "test_conformance_usage::test_track_fractional_quantities",
        "test_conformance_usage::test_track_quantity_must_be_a_positive_number",
    ],
    "§5 track: 404 Customer not found": [
        "test_conformance_usage::test_track_unknown_customer_is_404_customer_not_found",
    ],
    "§5 track: 404 No active subscription with this feature": [
        "test_conformance_usage::test_track_without_grant_is_404_no_active_subscription",
    ],
    "§5 track: 400 Feature is not a usage quota type": [
        "test_conformance_usage::test_track_non_quota_feature_is_400",
    ],
    "§5 track: 400 quota_exceeded when consumed + quantity > limit": [
        "test_conformance_usage::test_track_over_the_limit_is_400_quota_exceeded_and_not_counted",
    ],
    "§5 metrics -> 200 {metrics[...], customer_id}": [
        "test_conformance_usage::test_metrics_shape",
        "test_conformance_usage::test_metrics_filter_by_feature_key",
        "test_conformance_usage::test_metrics_unknown_customer_is_404",
        "test_conformance_usage::test_metrics_requires_customer_id",
    ],
    "issue: concurrency-safe state (200 concurrent tracks all count)": [
        "test_conformance_usage::test_concurrent_200_tracks_all_count",
    ],
    # §5 Customers
    "§5 POST /customers -> 201 Customer (snake_case fields)": [
        "test_conformance_customers::test_customer_create_is_201_with_customer_shape",
        "test_conformance_customers::test_customer_create_then_subscribe_by_returned_id",
    ],
    "§5 customer fields: email required, external_id ^[A-Za-z0-9_-]+$ <=255, name <=256, country 2 letters": [
        "test_conformance_customers::test_customer_create_requires_an_email",
        "test_conformance_customers::test_customer_external_id_pattern_is_enforced",
        "test_conformance_customers::test_customer_external_id_pattern_accepts",
        "test_conformance_customers::test_customer_name_max_256",
        "test_conformance_customers::test_customer_billing_address_country_is_two_letters",
        "test_conformance_customers::test_customer_metadata_is_an_object",
    ],
    "§5 409 when email or external id is taken": [
        "test_conformance_customers::test_customer_taken_email_is_409",
        "test_conformance_customers::test_customer_taken_external_id_is_409",
        "test_conformance_customers::test_customer_patch_to_taken_email_or_external_id_is_409",
    ],
    "§5 GET /customers/{id}, /customers/external/{external_id} -> 200; 404": [
        "test_conformance_customers::test_customer_get_by_id_and_by_external_id",
        "test_conformance_customers::test_customer_get_unknown_is_404",
        "test_conformance_customers::test_customer_get_by_id_does_not_take_an_external_id",
    ],
    "§5 PATCH /customers/{id} -> 200, all optional, external_id set once": [
        "test_conformance_customers::test_customer_patch_updates_fields",
        "test_conformance_customers::test_customer_patch_all_fields_optional",
        "test_conformance_customers::test_customer_patch_validates_fields",
        "test_conformance_customers::test_customer_patch_external_id_can_be_set_once",
        "test_conformance_customers::test_customer_patch_unknown_is_404",
    ],
    "§5 DELETE /customers/{id} -> 204 empty (soft delete, cancels its subscriptions)": [
        "test_conformance_customers::test_customer_delete_is_204_empty_then_404",
        "test_conformance_customers::test_customer_delete_cancels_its_subscriptions",
    ],
    "§5 GET /customers: limit 1..100 (50), page, email, external_id, query, sort_by, sort_order": [
        "test_conformance_customers::test_customer_list_pagination",
        "test_conformance_customers::test_customer_list_parameters_are_validated",
        "test_conformance_customers::test_customer_list_limit_bounds_are_inclusive",
        "test_conformance_customers::test_customer_list_filters",
        "test_conformance_customers::test_customer_list_sort",
    ],
    # §5 Subscriptions
    "§5 POST /subscriptions -> 201 Subscription": [
        "test_conformance_subscriptions::test_subscription_create_is_201_with_subscription_shape",
        "test_conformance_subscriptions::test_subscription_create_with_trial_is_trialing",
        "test_conformance_subscriptions::test_subscription_create_validates_fields",
        "test_conformance_subscriptions::test_subscription_create_unknown_customer_or_price_is_404",
    ],
    "§5 GET /subscriptions/{id}; GET /subscriptions?customer_id= -> list": [
        "test_conformance_subscriptions::test_subscription_get",
        "test_conformance_subscriptions::test_subscription_get_unknown_is_404",
        "test_conformance_subscriptions::test_subscription_list_by_customer_id",
    ],
    "§5 PATCH /subscriptions/{id}: price_id, cancel_at_period_end, metadata": [
        "test_conformance_subscriptions::test_subscription_update_changes_plan",
        "test_conformance_subscriptions::test_subscription_update_schedules_cancel_and_sets_metadata",
        "test_conformance_subscriptions::test_subscription_update_validates_fields",
        "test_conformance_subscriptions::test_subscription_update_unknown_is_404",
    ],
    "§5 POST /subscriptions/{id}/cancel (default at period end) -> 200/201": [
        "test_conformance_subscriptions::test_subscription_cancel_defaults_to_period_end",
        "test_conformance_subscriptions::test_subscription_cancel_now",
        "test_conformance_subscriptions::test_subscription_cancel_unknown_is_404",
    ],
    "§5 POST /subscriptions/{id}/reactivate -> 200/201": [
        "test_conformance_subscriptions::test_subscription_reactivate_undoes_a_scheduled_cancel",
        "test_conformance_subscriptions::test_subscription_reactivate_unknown_is_404",
    ],
    "§5 every status; an unknown status must not crash": [
        "test_conformance_subscriptions::test_subscription_every_status_is_served_and_unknown_ones_do_not_crash",
        "test_seeding::test_seeding_set_status_accepts_unknown_values",
    ],
    # §6 (the server's half of the first Node SDK defect)
    "§6 path segments: an encoded segment stays one segment, never another route": [
        "test_conformance_paths::test_paths_hostile_segment_reaches_its_own_route_as_one_segment",
        "test_conformance_paths::test_paths_encoded_slash_cannot_reach_the_external_id_route",
        "test_conformance_paths::test_paths_traversal_cannot_cancel_another_resource",
        "test_conformance_paths::test_paths_traversal_cannot_revoke_a_token_through_another_path",
        "test_conformance_paths::test_paths_encoded_segment_is_decoded_once",
        "test_conformance_paths::test_paths_extra_or_missing_segments_match_no_route",
    ],
    # Issue 3: fault injection and seeding
    "issue: Fault.error(N) with or without Retry-After, not processed": [
        "test_faults::test_fault_error_answers_the_envelope_without_processing",
        "test_faults::test_fault_error_with_and_without_retry_after",
    ],
    "issue: Fault.delay": [
        "test_faults::test_fault_delay_processes_after_the_delay",
        "test_loopback::test_loopback_delay_and_rate_limit_headers",
    ],
    "issue: Fault.malformed_json / Fault.html": [
        "test_faults::test_fault_malformed_json_is_200_not_json_and_not_processed",
        "test_faults::test_fault_html_is_a_proxy_page_not_processed",
    ],
    "issue: Fault.reset: protocol error, nothing happened": [
        "test_faults::test_fault_reset_in_process_is_a_protocol_error_and_not_processed",
        "test_faults::test_fault_reset_is_recorded_with_no_status",
        "test_loopback::test_loopback_reset_is_a_protocol_error_and_nothing_happened",
    ],
    "issue: Fault.drop_response: processed, then the answer is lost": [
        "test_faults::test_fault_drop_response_in_process_is_processed_then_lost",
        "test_loopback::test_loopback_drop_response_counts_but_the_client_sees_a_protocol_error",
    ],
    "issue: times / probability (seeded) / wildcard patterns / bad pattern -> ValueError": [
        "test_faults::test_fault_times_counts_firings",
        "test_faults::test_fault_times_none_is_forever",
        "test_faults::test_fault_only_hits_its_route",
        "test_faults::test_fault_probability_with_a_seed_is_repeatable",
        "test_faults::test_fault_probability_one_always_fires",
        "test_faults::test_fault_wildcard_star_matches_every_route",
        "test_faults::test_fault_wildcard_method_pattern",
        "test_faults::test_fault_wildcard_path_pattern",
        "test_faults::test_fault_first_armed_matching_rule_fires",
        "test_faults::test_fault_bad_pattern_is_value_error_listing_routes",
        "test_faults::test_fault_arguments_are_validated",
        "test_faults::test_fault_does_not_fire_on_unmatched_paths",
    ],
    "issue: seeding and read-back from Python": [
        "test_seeding::test_seeding_secret_key_is_sk_test_and_each_fake_is_independent",
        "test_seeding::test_seeding_add_feature_rejects_unknown_type",
        "test_seeding::test_seeding_add_product_checks_its_grants",
        "test_seeding::test_seeding_add_customer_and_find_it_by_either_id",
        "test_seeding::test_seeding_subscribe_by_external_id_or_record",
        "test_seeding::test_seeding_trial_days_start_trialing",
        "test_seeding::test_seeding_usage_of_reads_what_the_server_counted",
        "test_seeding::test_seeding_requests_are_recorded_without_the_secret",
        "test_conformance_connection::test_request_id_is_recorded_with_the_request",
        "test_seeding::test_seeding_verify_session_token_rejects_foreign_tokens",
        "test_seeding::test_seeding_subscription_unknown_is_an_error",
    ],
}


@pytest.mark.parametrize("rule", sorted(CONTRACT_MAP))
def test_every_mapped_test_exists(rule: str) -> None:
    for node in CONTRACT_MAP[rule]:
        module_name, _, function = node.partition("::")
        module = importlib.import_module(f"{__package__}.{module_name}")
        assert callable(getattr(module, function, None)), f"{rule}: {node} does not exist"


def test_every_conformance_test_is_mapped() -> None:
    """No conformance test is left out of the closing note's table."""
    mapped = {node for nodes in CONTRACT_MAP.values() for node in nodes}
    modules = [
        "test_conformance_connection",
        "test_conformance_errors",
        "test_conformance_limits",
        "test_conformance_idempotency",
        "test_conformance_session_tokens",
        "test_conformance_usage",
        "test_conformance_customers",
        "test_conformance_subscriptions",
        "test_conformance_paths",
        "test_faults",
        "test_seeding",
        "test_loopback",
    ]
    unmapped = [
        f"{name}::{attr}"
        for name in modules
        for attr in dir(importlib.import_module(f"{__package__}.{name}"))
        if attr.startswith("test_") and f"{name}::{attr}" not in mapped
    ]
    assert not unmapped
