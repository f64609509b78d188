"""The dashboard's server side without a browser: every page answers its HTML shell, the static
files are served (and revalidated), and every module a page or module imports ships in the package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleout_server.ui import PAGES, STATIC_DIR, render_page
from tests.unit.test_api_support import Api, build_api

IMPORT = re.compile(r"""(?:from|import)\s*\(?\s*["'](\./[^"'$`]+)["']""")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path)


def test_every_page_answers_its_shell_with_navigation(api: Api) -> None:
    for page in PAGES:
        path = page.path.replace("{session_id}", "s-1")
        res = api.client.get(path)
        assert res.status_code == 200, path
        assert res.headers["content-type"].startswith("text/html")
        html = res.text
        assert f'data-page="{page.key}"' in html
        assert '<script type="module" src="/ui/static/app.js"></script>' in html
        assert f'data-nav="{page.nav}" aria-current="page"' in html
        for nav_path in ("/", "/sessions", "/clients", "/models", "/packages", "/actions"):
            assert f'href="{nav_path}"' in html
    assert 'data-session-id="s-1"' in api.client.get("/sessions/s-1").text


def test_session_id_in_the_url_is_escaped_into_the_page(api: Api) -> None:
    html = api.client.get('/sessions/x"><img src=x onerror=alert(1)>').text
    assert "<img src=x" not in html
    assert 'data-session-id="x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in html


def test_static_files_are_served_and_revalidated(api: Api) -> None:
    res = api.client.get("/ui/static/app.js")
    assert res.status_code == 200
    assert "javascript" in res.headers["content-type"]
    assert res.headers["cache-control"] == "no-cache" and res.headers.get("etag")
    assert api.client.get("/ui/static/style.css").headers["content-type"].startswith("text/css")
    missing = api.client.get("/ui/static/nope.js")
    assert missing.status_code == 404
    assert api.client.get("/ui/static/../pages.py").status_code == 404


def test_the_api_keeps_its_json_errors_next_to_the_pages(api: Api) -> None:
    res = api.client.get("/api/v1/nothing-here")
    assert res.status_code == 404 and "message" in res.json()
    assert api.client.get("/api/v1/sessions/").json() == {"count": 0, "result": []}
    schema_paths = api.client.get("/openapi.json").json()["paths"]
    assert "/" not in schema_paths and "/sessions" not in schema_paths


def test_every_page_module_and_import_ships_with_the_package() -> None:
    shipped = {p.name for p in STATIC_DIR.iterdir()}
    for page in PAGES:
        assert f"page_{page.key}.js" in shipped
    for module in STATIC_DIR.glob("*.js"):
        for target in IMPORT.findall(module.read_text()):
            assert Path(target).name in shipped, f"{module.name} imports missing {target}"
    assert {"style.css", "favicon.svg", "app.js"} <= shipped


def test_unknown_page_key_is_refused_with_the_list() -> None:
    with pytest.raises(KeyError, match="pages: overview, sessions"):
        render_page("nope")
