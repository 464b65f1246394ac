"""Admission control: request-rate and token-rate limits, per tenant.

``should_admit(estimated_tokens)`` answers ``(admitted, reason)`` with reason ``"ok"``,
``"qps_limit"`` or ``"token_rate_limit"``; ``record_request(tokens)`` charges an admitted request.
Rates are a moving-window average (the default) or token buckets with a burst
(``mode="token_bucket"``, Envoy's semantics).
"""

from llmds._core import AdmissionController as AdmissionController
from llmds._core import ManualClock as ManualClock

__all__ = ["AdmissionController", "ManualClock"]
