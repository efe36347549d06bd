"""The Envoy ext_proc side of the picker: the gRPC servicer, the per-request stream state machine, and the
Endpoint Picker Protocol's names and messages. It knows *how* to talk to the proxy, never *how* endpoints
are chosen: that is :mod:`endpoint_picker`'s job.
"""
