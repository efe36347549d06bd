"""Built-in plugins, one per module, each registered under its upstream type string on import."""

from endpoint_picker.scheduling.plugins import (  # noqa: F401
    active_request_scorer,
    approx_prefix_cache_producer,
    concurrency_detector,
    data_layer_plugins,
    kv_cache_utilization_scorer,
    label_filters,
    load_aware_scorer,
    lora_affinity_scorer,
    max_score_picker,
    no_hit_lru_scorer,
    prefix_cache_scorer,
    queue_scorer,
    random_picker,
    role_filters,
    running_requests_size_scorer,
    session_affinity_scorer,
    single_profile_handler,
    token_load_scorer,
    utilization_detector,
    weighted_random_picker,
)
