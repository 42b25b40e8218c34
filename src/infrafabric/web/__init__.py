"""The live dashboard and Prometheus metrics (``pip install infrafabric[web]``).

:func:`create_app` returns an ASGI app (Starlette) that serves the dashboard
page, its event stream and ``/metrics`` for one bus; ``ifctl web`` runs it
under uvicorn. :class:`FleetView` is the live picture behind both.
"""

from infrafabric.web.app import create_app
from infrafabric.web.view import FleetView, critical_path

__all__ = ["FleetView", "create_app", "critical_path"]
