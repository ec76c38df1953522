"""The lazy exports of ``billingos`` and ``billingos.testing``: what they list, what they refuse, and the
message a missing ``testing`` extra gives.
"""

from __future__ import annotations

import sys

import pytest

import billingos
import billingos.testing


def test_dir_of_billingos_lists_every_export_including_the_lazy_ones() -> None:
    listed = dir(billingos)
    assert listed == sorted(listed)
    assert set(billingos.__all__) <= set(listed)
    for name in ("UsageRecorder", "SyncUsageRecorder", "EntitlementCache", "DeadLetter"):
        assert name in listed


def test_an_unknown_attribute_of_billingos_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'billingos' has no attribute 'Nope'"):
        billingos.Nope  # noqa: B018
    assert not hasattr(billingos, "_LAZY_NOT_A_NAME")


def test_every_name_billingos_testing_exports_resolves() -> None:
    for name in billingos.testing.__all__:
        assert getattr(billingos.testing, name) is not None


def test_an_unknown_attribute_of_billingos_testing_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'billingos\.testing' has no attribute 'FakeServer'"):
        billingos.testing.FakeServer  # noqa: B018


def test_a_missing_testing_extra_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if starlette/uvicorn were not installed: the module behind a name cannot be imported."""
    monkeypatch.delitem(billingos.testing.__dict__, "Fault", raising=False)  # not cached yet
    monkeypatch.setitem(sys.modules, "billingos.testing._faults", None)  # import of it fails
    with pytest.raises(ImportError, match=r"pip install 'billingos\[testing\]'") as caught:
        billingos.testing.Fault  # noqa: B018
    assert isinstance(caught.value.__cause__, ImportError)
    assert "Fault" not in billingos.testing.__dict__  # a failed import is not cached
