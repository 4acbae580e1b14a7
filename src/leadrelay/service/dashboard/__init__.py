"""The dashboard of ``leadrelay serve``: Event Delivery, the funnel, one event, the playground.

Plain server-rendered pages (inline CSS, inline SVG charts, no script, no external asset), behind
the dashboard or intake token (``auth``). Mounted by ``service.app.create_app`` through
``dashboard_routes``.
"""

from leadrelay.service.dashboard.routes import PauseSource, dashboard_routes

__all__ = ["PauseSource", "dashboard_routes"]
