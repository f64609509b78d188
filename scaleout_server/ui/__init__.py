"""The web dashboard the controller serves at `/`: one HTML shell per page plus static CSS and
JavaScript modules (no build step, no CDN). The pages read and act through the REST API under
/api/v1, exactly as the CLI does, so the dashboard can never show something the API does not."""

from scaleout_server.ui.pages import PAGES, STATIC_DIR, Page, page_by_key, render_page

__all__ = ["PAGES", "STATIC_DIR", "Page", "page_by_key", "render_page"]
