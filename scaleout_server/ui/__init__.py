"""Server-rendered pages of the controller (a minimal overview for now)."""

from scaleout_server.ui.overview import render_overview

__all__ = ["render_overview"]
