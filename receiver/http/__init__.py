"""The HTTP adapter: the MPS webhook, the management API (a sub-application under ``/v1/``), the
probes, the OpenAPI document and the operator console, each in a module named for its concept."""
