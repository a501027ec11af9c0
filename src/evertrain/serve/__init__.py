"""Serving: the HTTP app (KServe V1 shapes), routing, hot swap, logs and metrics.

``create_app(store, spec)`` builds the ASGI app; ``evertrain serve`` runs it under uvicorn.
"""

from __future__ import annotations

from evertrain.data.logs import LogWriter
from evertrain.serve.app import create_app
from evertrain.serve.metrics import ServeMetrics

__all__ = ["LogWriter", "ServeMetrics", "create_app"]
