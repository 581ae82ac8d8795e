"""curvedit gateway side: settings, job spec, HTTP API, job store, CLI and client (no torch)."""

__version__ = "0.1.0"
