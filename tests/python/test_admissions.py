"""llmds.admissions.AdmissionController: reasons, both modes, tenants, stats, errors."""

from __future__ import annotations

import pytest

from llmds.admissions import AdmissionController, ManualClock


def test_defaults_and_no_limits() -> None:
    ac = AdmissionController()
    assert (ac.qps_limit, ac.token_rate_limit, ac.window_s, ac.mode) == (None, None, 1.0, "moving_window")
    assert ac.should_admit() == (True, "ok")
    assert ac.should_admit(10**9) == (True, "ok")


def test_moving_window_qps_and_token_limits() -> None:
    clock = ManualClock()
    ac = AdmissionController(qps_limit=2, token_rate_limit=100, clock=clock)
    assert ac.should_admit(60) == (True, "ok")
    ac.record_request(60)
    assert ac.should_admit(50) == (False, "token_rate_limit")
    assert ac.try_admit(40) == (True, "ok")
    assert ac.should_admit(0) == (False, "qps_limit")
    clock.advance(1.0)
    assert ac.should_admit(100) == (True, "ok")
    st = ac.stats()
    assert st["admitted"] == 3 and st["rejected"] == 2 and st["recorded"] == 2
    assert st["rejected_by_reason"] == {"qps_limit": 1, "token_rate_limit": 1}
    assert st["current_qps"] == 0.0


def test_token_bucket_burst_and_refill() -> None:
    clock = ManualClock()
    ac = AdmissionController(qps_limit=10, mode="token_bucket", burst=2, clock=clock)
    assert ac.try_admit() == (True, "ok")
    assert ac.try_admit() == (True, "ok")
    assert ac.try_admit() == (False, "qps_limit")
    clock.advance(0.1)
    assert ac.try_admit() == (True, "ok")
    assert ac.mode == "token_bucket"


def test_tenants_are_limited_separately() -> None:
    ac = AdmissionController(qps_limit=1, clock=ManualClock())
    assert ac.try_admit(tenant="a") == (True, "ok")
    assert ac.try_admit(tenant="a") == (False, "qps_limit")
    assert ac.try_admit(tenant="b") == (True, "ok")
    assert ac.tenant_rates("a") == (1.0, 0.0)
    assert ac.stats()["tenants"] == 2


def test_bad_input_is_value_error() -> None:
    ac = AdmissionController(qps_limit=5, clock=ManualClock())
    with pytest.raises(ValueError):
        ac.should_admit(-1)
    with pytest.raises(ValueError):
        ac.record_request(-5)
    assert ac.stats()["admitted"] == 0 and ac.stats()["recorded"] == 0
    with pytest.raises(ValueError):
        AdmissionController(qps_limit=0)
    with pytest.raises(ValueError):
        AdmissionController(window_s=0)
    with pytest.raises(ValueError, match="mode"):
        AdmissionController(mode="leaky")
