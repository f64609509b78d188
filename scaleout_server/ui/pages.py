"""Which dashboard pages exist, at which URL, and the HTML shell each one is served as.

The shell is the same for every page: navigation, a `<main>` naming the page (and its
parameters as data attributes) and the entry module `app.js`, which loads the page's module and
fills `<main>` from the REST API. Keeping the server side this thin means there is a single
place (the JavaScript) that knows how a page looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from html import escape
from pathlib import Path
from string import Template

UI_DIR = Path(__file__).resolve().parent
STATIC_DIR = UI_DIR / "static"
TEMPLATE = UI_DIR / "templates" / "shell.html"
STATIC_URL = "/ui/static"


@dataclass(frozen=True)
class Page:
    key: str  # the page module is static/page_<key>.js
    path: str  # URL (FastAPI path syntax)
    title: str
    nav: str  # the navigation entry highlighted on this page


PAGES: tuple[Page, ...] = (
    Page("overview", "/", "Overview", "overview"),
    Page("sessions", "/sessions", "Sessions", "sessions"),
    Page("session", "/sessions/{session_id}", "Session", "sessions"),
    Page("clients", "/clients", "Clients", "clients"),
    Page("models", "/models", "Models", "models"),
    Page("packages", "/packages", "Packages", "packages"),
    Page("inference", "/inference", "Inference", "inference"),
    Page("actions", "/actions", "Actions", "actions"),
    Page("cli_login", "/cli-login/{request_id}", "CLI login", "overview"),
)
NAV: tuple[tuple[str, str, str], ...] = tuple((p.key, p.path, p.title) for p in PAGES if p.key == p.nav)


def page_by_key(key: str) -> Page:
    for page in PAGES:
        if page.key == key:
            return page
    raise KeyError(f"no dashboard page {key!r}; pages: {', '.join(p.key for p in PAGES)}")


@lru_cache(maxsize=1)
def _template() -> Template:
    return Template(TEMPLATE.read_text(encoding="utf-8"))


def _nav(current: str) -> str:
    links = []
    for key, path, title in NAV:
        current_attr = ' aria-current="page"' if key == current else ""
        links.append(f'<a href="{path}" data-nav="{key}"{current_attr}>{escape(title)}</a>')
    return "\n      ".join(links)


def _data_attributes(params: dict[str, str]) -> str:
    return "".join(f' data-{escape(name.replace("_", "-"))}="{escape(value, quote=True)}"'
                   for name, value in sorted(params.items()))


def render_page(key: str, params: dict[str, str] | None = None) -> str:
    """The HTML shell of page `key`; `params` (path parameters) reach the page module as
    `data-*` attributes of `<main>` (session_id -> data-session-id)."""
    page = page_by_key(key)
    return _template().substitute(
        title=escape(page.title),
        page=escape(page.key),
        nav=_nav(page.nav),
        data=_data_attributes(params or {}),
        static=STATIC_URL,
    )
