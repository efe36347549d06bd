"""Scheduling: choosing a primary endpoint and ordered fallbacks for a request."""

from endpoint_picker.scheduling.interface import Scheduler, SchedulingResult
from endpoint_picker.scheduling.least_inflight import LeastInFlightScheduler

__all__ = ["LeastInFlightScheduler", "Scheduler", "SchedulingResult"]
