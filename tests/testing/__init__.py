"""Conformance tests of ``billingos.testing`` itself: raw httpx against the fake, no SDK client.

The contract rule -> test mapping lives in ``test_contract_map.py`` (and is checked there).
"""
