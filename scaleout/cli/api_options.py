"""Options shared by the commands that talk to the controller's REST API, and the connection they build.

Every API command takes `-p/--protocol`, `-H/--host`, `-P/--port`, `-t/--token` and `--no-verify-tls`
(the official CLI's names); list commands add `-o/--output` and `--n_max`, get commands `-id/--id`.
Without `-H/-p/-P` the active context (`scaleout login`) names the server and token, else 127.0.0.1:8092.
Failures end the command with exit status 1 and the server's own message, so scripts can rely on `$?`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import requests

from scaleout.cli import contexts
from scaleoututil.api.client import LOCAL_HOSTS, APIClient
from scaleoututil.api.upload import error_message

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8092
TOKEN_ENV = "SCALEOUT_AUTH_TOKEN"
OUTPUT_FORMATS = ("human", "json", "yaml")

F = TypeVar("F", bound=Callable[..., Any])


class ApiError(click.ClickException):
    """A failed API call, reported as `Error: <message>` with exit status 1."""

    exit_code = 1


def resolve_base_url(host: str | None = None, port: int | str | None = None, protocol: str | None = None) -> str:
    """`scheme://host[:port]` from the options.

    `host` may be a URL (`http://10.0.0.5:8092/x`: scheme and port are used, the path dropped). The
    scheme defaults to http for localhost/127.0.0.1 and https elsewhere; `protocol` and `port` override
    what the URL says. Without `host` the local server (127.0.0.1:8092) is meant; a local host without a
    port means port 8092, a remote one without a port the scheme's default (a proxy on 443).
    """
    if not host:
        host = DEFAULT_HOST
    text = host.strip()
    try:
        parsed = urlsplit(text if "://" in text else f"//{text}")
        url_port = parsed.port
    except ValueError as err:
        raise click.BadParameter(f"{host!r} is not a valid host or URL ({err})", param_hint="'-H' / '--host'") from None
    hostname = parsed.hostname
    if not hostname:
        raise click.BadParameter(f"{host!r} has no host name", param_hint="'-H' / '--host'")
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    scheme = (protocol or parsed.scheme or ("http" if hostname.lower() in LOCAL_HOSTS else "https")).lower()
    if scheme not in ("http", "https"):
        raise click.BadParameter(f"protocol must be http or https, not {scheme!r}", param_hint="'-p' / '--protocol'")
    final_port = port if port not in (None, "") else url_port
    if final_port is None and hostname.lower() in LOCAL_HOSTS:
        final_port = DEFAULT_PORT  # this machine: our server's port, as the APIClient assumes too
    if final_port is not None:
        try:
            number = int(final_port)
        except (TypeError, ValueError):
            raise click.BadParameter(f"{final_port!r} is not a port number", param_hint="'-P' / '--port'") from None
        if not 0 < number < 65536:
            raise click.BadParameter(f"{number} is not a port number (1-65535)", param_hint="'-P' / '--port'")
        return f"{scheme}://{hostname}:{number}"
    return f"{scheme}://{hostname}"


@dataclass
class Api:
    """Where the controller is and how to call it; every call either returns the JSON body or exits 1."""

    base_url: str
    token: str | None = None
    verify: bool = True
    _client: APIClient | None = field(default=None, repr=False)

    @property
    def client(self) -> APIClient:
        if self._client is None:
            self._client = APIClient(self.base_url, verify=self.verify, token=self.token or "")
        return self._client

    @property
    def headers(self) -> dict[str, str]:
        return self.client._get_headers()

    def call(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        """Send one request to `/api/v1/<endpoint>`; exit 1 on connection problems or HTTP >= 400."""
        reply = self.send(method, endpoint, **kwargs)
        try:
            return reply.json()
        except ValueError:
            return reply.text

    def send(self, method: str, endpoint: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> requests.Response:
        """Like `call` but returns the response (for downloads); statuses in `allow` are not failures."""
        try:
            reply = self.client.request(method, endpoint, **kwargs)
        except requests.exceptions.SSLError as err:
            raise ApiError(f"TLS error talking to {self.base_url}: {err}. Use --no-verify-tls for a self-signed "
                           "certificate, or -p http if the server does not use TLS.") from None
        except requests.ConnectionError:
            raise ApiError(self.connect_hint()) from None
        except requests.Timeout:
            raise ApiError(f"The controller at {self.base_url} did not answer in time ({method} {endpoint}).") from None
        if reply.status_code >= 400 and reply.status_code not in allow:
            raise ApiError(self.describe_failure(reply))
        return reply

    def list(self, endpoint: str, params: dict[str, Any] | None = None, n_max: int | None = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
        """GET a list resource: `{"count": N, "result": [...]}`; `n_max` is sent as `X-Limit`."""
        extra = dict(headers or {})
        if n_max is not None:
            extra["X-Limit"] = str(n_max)
        body = self.call("GET", endpoint, params=params, headers=extra)
        if not isinstance(body, dict) or "result" not in body:
            raise ApiError(f"Unexpected reply from {self.base_url}/api/v1/{endpoint}: {str(body)[:200]}")
        return body

    def connect_hint(self) -> str:
        return f"Could not connect to the controller at {self.base_url}: is `scaleout server start` running?"

    def describe_failure(self, reply: requests.Response) -> str:
        message = error_message(reply)
        if reply.status_code in (401, 403):
            hint = " (pass a token with -t/--token or SCALEOUT_AUTH_TOKEN)" if not self.token else ""
            return f"HTTP {reply.status_code}: {message}{hint}"
        return f"{message} (HTTP {reply.status_code})"


def api_options(func: F) -> F:
    """Add the connection options and pass the command an `api: Api` argument instead of them."""

    @click.option("--no-verify-tls", "no_verify_tls", is_flag=True,
                  help="Do not verify the server TLS certificate (connection is still encrypted).")
    @click.option("-t", "--token", envvar=TOKEN_ENV, show_envvar=True, default=None,
                  help="Authentication token (sent as 'Authorization: Bearer <token>').")
    @click.option("-P", "--port", type=click.IntRange(1, 65535), default=None,
                  help=f"Port of controller (api). [default: {DEFAULT_PORT} for localhost/127.0.0.1]")
    @click.option("-H", "--host", default=None,
                  help=f"Hostname or URL of controller (api). [default: {DEFAULT_HOST}]")
    @click.option("-p", "--protocol", type=click.Choice(["http", "https"], case_sensitive=False), default=None,
                  help="Communication protocol of controller (api). [default: http for localhost, else https]")
    @functools.wraps(func)
    def wrapper(*args: Any, protocol: str | None, host: str | None, port: int | None, token: str | None,
                no_verify_tls: bool, **kwargs: Any) -> Any:
        if no_verify_tls:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if not host and protocol is None and port is None:
            context = contexts.active()  # `scaleout login` chose the server; else the local one
            if context is not None:
                host, token = context.host, token or context.token
        api = Api(resolve_base_url(host, port, protocol), token=token or None, verify=not no_verify_tls)
        return func(*args, api=api, **kwargs)

    return wrapper  # type: ignore[return-value]


def output_option(func: F) -> F:
    return click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS, case_sensitive=False),
                        default="human", show_default=True,
                        help="Output format: human (tables), json or yaml (the raw records).")(func)


def list_options(func: F) -> F:
    """`-o/--output` and `--n_max` (sent as the `X-Limit` header)."""
    func = click.option("--n_max", "n_max", type=click.IntRange(min=1), default=None,
                        help="Number of items to list (newest first when the server sorts by time).")(func)
    return output_option(func)


def id_option(label: str) -> Callable[[F], F]:
    """`-id/--id` (required), as the official get commands take it."""

    def decorate(func: F) -> F:
        return click.option("-id", "--id", "id_", required=True, help=f"{label} ID")(func)

    return decorate


def parse_json_object(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object given on the command line (`'{"lr": 0.1}'`); a clear error for anything else."""
    import json

    if text is None or text.strip() == "":
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise click.BadParameter(
            f"not valid JSON ({err.msg} at column {err.colno}): {text!r}. "
            "Quote the whole object for the shell, e.g. '{\"learning_rate\": 0.1}'",
            param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"expected a JSON object like '{{\"key\": 1}}', got {type(value).__name__}: {text!r}",
                                 param_hint=option)
    return value


def parse_id_list(text: str | None) -> list[str] | None:
    """`"a, b,c"` -> `["a", "b", "c"]`; nothing -> None (meaning: all clients)."""
    if not text:
        return None
    ids = [part.strip() for part in text.split(",") if part.strip()]
    return ids or None
