"""Scheduling: choosing a primary endpoint and ordered fallbacks for a request.

The framework (filters, scorers, pickers, profile handlers, data producers, request-control hooks) follows the
upstream EPP; configurations are upstream ``EndpointPickerConfig`` YAML.
"""

from endpoint_picker.scheduling.config import SchedulerConfig, default_config, load_config_text
from endpoint_picker.scheduling.interface import Scheduler, SchedulingResult
from endpoint_picker.scheduling.scheduler import FrameworkScheduler

__all__ = ["FrameworkScheduler", "Scheduler", "SchedulerConfig", "SchedulingResult", "default_config",
           "load_config_text"]
