"""The local gateway: a real Envoy in front of the endpoint picker and stand-in OpenAI model servers.

Why this package exists: the picker only means something behind a real proxy. ``stack`` builds and checks the
Envoy bootstrap (:mod:`stack.envoy_bootstrap`, template in ``manifests/local-gateway``), runs Envoy and the
picker as child processes (:mod:`stack.envoy_process`, :mod:`stack.picker_process`), serves stand-in model
servers (:mod:`stack.standin_server`), assembles all of it (:mod:`stack.gateway`, and
:mod:`stack.background` for synchronous tests) and drives ``endpoint-picker stack`` (:mod:`stack.cli`,
:mod:`stack.runner`). It is a test and demo harness: the product (``extproc``, ``endpoint_picker``) never
imports it.
"""
