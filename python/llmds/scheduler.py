"""Dynamic micro-batching scheduler with SLO-aware priorities (and an engine's batch building).

Order: a request whose SLO deadline (arrival + slo_ms) is at risk goes first, earliest deadline
first; otherwise fewer remaining tokens first; ties by arrival. A batch is released when
``max_batch_size`` requests wait, the oldest has waited ``max_wait_ms``, an SLO is at risk, or
``get_batch(force=True)``. Pass ``clock=ManualClock()`` to run on simulated time.
"""

from llmds._core import ManualClock as ManualClock
from llmds._core import Scheduler as Scheduler

__all__ = ["ManualClock", "Scheduler"]
