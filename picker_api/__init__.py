"""The Endpoint Picker's typed API: explain a decision, stream decisions, snapshot the pool's state.

- :mod:`picker_api.v1` — stubs generated from ``protos/endpoint_picker/v1/picker.proto`` at build time;
- :mod:`picker_api.convert` — decision records and picker state to messages;
- :mod:`picker_api.servicer` — the grpc.aio service, served on the ext_proc port next to ext_proc;
- :mod:`picker_api.client` — channels to that port (TLS trusting the picker's own certificate) and calls;
- :mod:`picker_api.render` and :mod:`picker_api.cli` — ``endpoint-picker explain|state|decisions``.

See ``protos/README.md`` for the API, how the stubs are generated and how the client handles TLS.
"""
