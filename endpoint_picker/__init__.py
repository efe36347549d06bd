"""endpoint-picker: an inference-aware Endpoint Picker for the Gateway API Inference Extension.

This package holds everything that *decides* (request model, director, scheduling, datastore, metrics, CLI);
the ext_proc wire protocol lives in the sibling package ``extproc``.
"""

__version__ = "0.1.0"
