"""The REST half of client start: token exchange, registration with the controller, package download.

Every failure here ends as a RegistrationError whose message says what went wrong and what to do,
because this is where a misconfigured client (wrong URL, bad token, no package) is caught.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from scaleout.client.retry import Backoff, Interrupted, TransientError, until_answered
from scaleout.project.package import ARCHIVE_SUFFIXES
from scaleoututil.api.client import LOCAL_HOSTS
from scaleoututil.api.upload import error_message as _message
from scaleoututil.jwtpeek import jwt_payload

logger = logging.getLogger(__name__)

REST_TIMEOUT = 10.0
REFRESH_MARGIN = 30.0  # refresh the access token when fewer seconds than this remain
REFRESH_COOLDOWN = 10.0  # after a failed refresh, keep the old token this long before trying again
DEFAULT_TOKEN_LIFETIME = 3600.0
PACKAGE_MISSING_INTERVAL = 3.0
REGISTRATION_BACKOFF_CAP = 15.0  # a restarted controller is found within this long
WIRE_CLIENT_VERSION = "1.1.0"  # the client protocol we speak; servers check compatibility against it
PACKAGES_DIR = Path(".scaleout") / "packages"
ARCHIVE_DIR = Path(".scaleout") / "package_archive"
KEEP_PACKAGES = 3  # unpacked packages a client keeps (prune_packages)


# Exit codes of `scaleout client start` for answers that can never succeed (README, CLI reference). Anything
# that may succeed later (no answer, 429, 5xx, no compute package yet) is retried until it does.
EXIT_STARTUP_FAILED = 1  # another start-up failure: the message says what to fix (project, local settings)
EXIT_TOKEN_REFUSED = 3  # the server refused the --token (revoked, expired, malformed) or requires one
EXIT_REGISTRATION_REFUSED = 4  # the controller refused this client (a 4xx other than 401/429, wrong URL)
EXIT_PACKAGE_REJECTED = 5  # the compute package failed its checks (signature, checksum, size, archive)
EXIT_COMBINER_REFUSED = 6  # the combiner refused this client (protocol version, TLS trust, authentication)
EXIT_UNTRUSTED_SERVER = 7  # the controller's HTTPS certificate is not trusted (pass --ca-file): client/tls.py


class RegistrationError(Exception):
    """Start-up cannot continue; the message tells the user what to fix, `exit_code` what `client start`
    exits with."""

    exit_code = EXIT_STARTUP_FAILED


class ServerUnavailable(RegistrationError, TransientError):
    """The server did not answer, or answered "not now" (429, 5xx, no package yet): trying again may help,
    so start-up retries it (retry.until_answered) instead of stopping."""


class TokenRefused(RegistrationError):
    """The server refused the refresh token itself (401 or another 4xx but 429): retrying cannot help, so a
    running client stops instead of polling with a dead credential forever."""

    exit_code = EXIT_TOKEN_REFUSED


class RegistrationRefused(RegistrationError):
    """The controller refused this client for good (a 4xx answer to registration or the package download)."""

    exit_code = EXIT_REGISTRATION_REFUSED


class PackageRejected(RegistrationError):
    """The compute package the server sent fails this client's checks; it is not run."""

    exit_code = EXIT_PACKAGE_REJECTED


class CombinerRefused(RegistrationError):
    """The combiner refused this client (incompatible protocol, untrusted TLS certificate, no token)."""

    exit_code = EXIT_COMBINER_REFUSED


class StartupInterrupted(RegistrationError, Interrupted):
    """The user stopped the client (Ctrl-C / SIGTERM) while it was still starting."""

    exit_code = 0


def api_base_url(url: str, port: int | str | None = None) -> str:
    """Normalise a controller URL: add a scheme (http for localhost, https elsewhere) and `port` if given."""
    url = url.strip().rstrip("/")
    if not url:
        raise RegistrationError("the API URL is empty: pass --api-url, e.g. http://127.0.0.1:8092")
    if "://" not in url:
        try:
            host = (urlsplit(f"//{url}").hostname or "").lower()
        except ValueError as exc:
            raise RegistrationError(f"'{url}' is not a valid API URL ({exc}): use e.g. http://127.0.0.1:8092") from exc
        url = ("http://" if host in LOCAL_HOSTS else "https://") + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistrationError(f"'{url}' is not a valid API URL: use e.g. http://127.0.0.1:8092")
    if port not in (None, ""):
        try:
            port_number = int(port)  # type: ignore[arg-type]
        except ValueError as exc:
            raise RegistrationError(f"--api-port must be a number, not {port!r}") from exc
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        parts = parts._replace(netloc=f"{host}:{port_number}")
    return urlunsplit(parts).rstrip("/")


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (unverified: only used to know when to refresh)."""
    exp = (jwt_payload(token) or {}).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def _jwt_role(token: str) -> str | None:
    """The `role` claim of a JWT (unverified: it only picks the exchange, as the official 1.1 client does)."""
    role = (jwt_payload(token) or {}).get("role")
    return role if isinstance(role, str) else None


class TokenManager:
    """Exchanges the refresh token given with --token for short-lived access tokens, and renews them.

    The token's JWT `role` picks the exchange as the official 1.1 client does: `client_refresh` at
    /api/v1/clients/token, anything else at /api/auth/refresh; an `enrollment` token first enrolls
    (/api/v1/clients/enroll) and continues with the refresh token the server returns.

    `access_token()` is called for every gRPC call and REST request; it refreshes when fewer than
    30 s remain. A refresh that fails for a network reason (or 429/5xx) keeps the old token while it is
    valid; a refused refresh token raises TokenRefused.
    """

    def __init__(self, api_url: str, refresh_token: str, *, timeout: float = REST_TIMEOUT,
                 session: requests.Session | None = None) -> None:
        role = _jwt_role(refresh_token)
        self.url = f"{api_url}/api/v1/clients/token" if role in ("client_refresh", "enrollment") \
            else f"{api_url}/api/auth/refresh"
        self._enroll_url = f"{api_url}/api/v1/clients/enroll" if role == "enrollment" else None
        self._refresh_token = refresh_token
        self._timeout = timeout
        self._session = session or requests.Session()
        self._lock = threading.Lock()
        self._access: str | None = None
        self._expires_at = 0.0
        self._next_attempt = 0.0

    def access_token(self) -> str:
        with self._lock:
            now = time.time()
            if self._access is not None and now < self._expires_at - REFRESH_MARGIN:
                return self._access
            if self._access is not None and now < self._next_attempt and now < self._expires_at:
                return self._access  # last refresh failed recently; the old token still works
            try:
                self._refresh_locked()
            except ServerUnavailable:  # transient (network, 429, 5xx): the current token may still serve
                if self._access is not None and time.time() < self._expires_at:
                    self._next_attempt = time.time() + REFRESH_COOLDOWN
                    logger.warning("could not refresh the access token; using the current one until it expires")
                    return self._access
                raise
            assert self._access is not None
            return self._access

    def refresh(self) -> None:
        """Get a new access token now (e.g. after the combiner said UNAUTHENTICATED)."""
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        if self._enroll_url is not None:
            self._enroll_locked(self._enroll_url)
            return
        response = self._post(self.url, "exchange the token", "token",
                              json={"refresh_token": self._refresh_token, "role": "client"})
        try:
            body = response.json()
        except ValueError as exc:
            raise RegistrationError(f"{self.url} answered without JSON: {response.text[:200]!r}") from exc
        access = (body.get("access_token") or body.get("access")) if isinstance(body, dict) else None
        if not access:
            raise RegistrationError(f"{self.url} returned no access_token")
        rotated = body.get("refresh_token") or body.get("refresh")
        if rotated:
            self._refresh_token = rotated
        expires = _jwt_expiry(access)
        if expires is None:
            lifetime = body.get("expires_in")
            expires = time.time() + (float(lifetime) if isinstance(lifetime, int | float) else DEFAULT_TOKEN_LIFETIME)
        self._access = access
        self._expires_at = expires
        self._next_attempt = 0.0

    def _post(self, url: str, action: str, token_kind: str, **kwargs: Any) -> requests.Response:
        """POST to a token route: RegistrationError when unreachable or failing for now, TokenRefused when
        the server refuses the token for good (a 4xx other than 429)."""
        try:
            response = self._session.post(url, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServerUnavailable(f"could not reach {url} to {action} ({_reason(exc)})") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise ServerUnavailable(f"{url} answered {response.status_code} ({_message(response)})",
                                    retry_after=_retry_after(response))
        if not 200 <= response.status_code < 300:
            raise TokenRefused(f"the server refused the {token_kind} ({response.status_code} from {url}: "
                               f"{_message(response)}); check --token (a revoked or expired token needs a new one: "
                               "scaleout token create --role client)")
        return response

    def _enroll_locked(self, url: str) -> None:
        """Trade the enrollment token for this client's own refresh token (and a first access token)."""
        response = self._post(url, "enroll", "enrollment token", json={},
                              headers={"Authorization": f"Bearer {self._refresh_token}"})
        try:
            body = response.json()
            refresh, access = str(body["refresh_token"]), str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistrationError(f"{url} answered without refresh_token/access_token") from exc
        self._refresh_token = refresh
        self._enroll_url = None
        self._access = access
        self._expires_at = _jwt_expiry(access) or time.time() + DEFAULT_TOKEN_LIFETIME
        self._next_attempt = 0.0
        logger.info("enrolled as client %s", body.get("client_id", "?"))


@dataclass
class Assignment:
    """What /clients/add answered: who we are and which combiner to dial."""

    client_id: str
    host: str
    port: int
    grpc_secure: bool | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _headers(token: TokenManager | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.access_token()}"} if token is not None else {}


def _reason(exc: requests.RequestException) -> str:
    """`connection refused` rather than urllib3's multi-line repr."""
    text = str(exc)
    for short in ("Connection refused", "Name or service not known", "timed out", "Connection reset",
                  "Remote end closed connection", "No route to host", "certificate verify failed"):
        if short.lower() in text.lower():
            return f"{type(exc).__name__}: {short.lower()}"
    return f"{type(exc).__name__}: {text[:200]}"


def _retry_after(response: requests.Response) -> float | None:
    """The server's Retry-After in seconds (capped at a minute), when it sent one."""
    try:
        value = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(max(value, 0.0), 60.0)


def startup_backoff() -> Backoff:
    """The back-off of start-up's REST steps: 1 s doubling to REGISTRATION_BACKOFF_CAP, so a client waiting for
    a controller that is down notices within that long that it is back."""
    return Backoff(start=1.0, cap=REGISTRATION_BACKOFF_CAP)


def register_client(api_url: str, body: dict[str, Any], *, token: TokenManager | None = None,
                    stop: threading.Event | None = None, give_up: Callable[[], bool] | None = None,
                    package_missing_interval: float = PACKAGE_MISSING_INTERVAL,
                    session: requests.Session | None = None) -> Assignment:
    """POST {api}/api/v1/clients/add until the controller assigns a combiner.

    200 -> Assignment; 203 (no compute package yet) -> ask again every `package_missing_interval` s;
    429/5xx/unreachable (and a token exchange that fails for one of these reasons) -> back off and try
    again, without a time limit, until the controller answers, `stop` is set (StartupInterrupted) or
    `give_up()` turns true (the last ServerUnavailable); 401 -> TokenRefused; other 4xx ->
    RegistrationRefused, with the server's message.
    """
    session = session or requests.Session()
    return until_answered(lambda: _register_once(api_url, body, token, session, package_missing_interval),
                          what=f"registration with the controller at {api_url}", stop=stop, give_up=give_up,
                          backoff=startup_backoff(), interrupted=StartupInterrupted,
                          log=logger)


def _register_once(api_url: str, body: dict[str, Any], token: TokenManager | None, session: requests.Session,
                   package_missing_interval: float) -> Assignment:
    url = f"{api_url}/api/v1/clients/add"
    try:
        response = session.post(url, json=body, headers=_headers(token), timeout=REST_TIMEOUT)
    except requests.RequestException as exc:
        raise ServerUnavailable(f"controller at {api_url} not reachable ({_reason(exc)})") from exc
    status = response.status_code
    if status == 200:
        return _assignment(url, response)
    if status == 203:
        raise ServerUnavailable(f"the controller cannot assign a combiner yet: {_message(response)}",
                                retry_after=package_missing_interval)
    if status == 401:
        raise TokenRefused(f"the controller refused the client (401: {_message(response)}): pass a valid --token")
    if status == 404:
        raise RegistrationRefused(f"{url} does not exist (404: {_message(response)}): "
                                  "is --api-url the controller's address?")
    if status == 429 or status >= 500:
        raise ServerUnavailable(f"controller at {api_url} answered {status} ({_message(response)})",
                                retry_after=_retry_after(response))
    if 400 <= status < 500:
        raise RegistrationRefused(f"the controller refused the registration ({status}): {_message(response)}")
    raise RegistrationRefused(f"unexpected HTTP {status} from {url}: {_message(response)}")


def _assignment(url: str, response: requests.Response) -> Assignment:
    try:
        data = response.json()
    except ValueError as exc:
        raise RegistrationError(f"{url} answered 200 without JSON: {response.text[:200]!r}") from exc
    if not isinstance(data, dict) or not data.get("client_id"):
        raise RegistrationError(f"{url} answered without a client_id: {str(data)[:200]}")
    host = data.get("public_hostname") or data.get("internal_hostname")
    if not host:
        raise RegistrationError(f"{url} assigned no combiner host (public_hostname/internal_hostname empty)")
    try:
        port = int(data.get("port"))
    except (TypeError, ValueError) as exc:
        raise RegistrationError(f"{url} assigned no valid combiner port: {data.get('port')!r}") from exc
    secure = data.get("grpc_secure")
    return Assignment(client_id=str(data["client_id"]), host=str(host), port=port,
                      grpc_secure=None if secure is None else bool(secure), raw=data)


# -- compute package -----------------------------------------------------------------------------
def _filename(response: requests.Response) -> str | None:
    header = response.headers.get("Content-Disposition", "")
    match = re.search(r"filename\*?=(?:UTF-8'')?[\"']?([^\"';]+)", header)
    return Path(match.group(1)).name if match else None


def _request_package_info(session: requests.Session, api_url: str, name: str | None, headers: dict[str, str]
                          ) -> dict[str, Any]:
    """`GET /packages/checksum` of the active package (or the one called `name`): the server's answer, which
    carries the "checksum" (and the "signature" of a signed package); RegistrationError when it cannot say."""
    url = f"{api_url}/api/v1/packages/checksum"
    try:
        response = session.get(url, params={"name": name} if name else None, headers=headers, timeout=REST_TIMEOUT)
    except requests.RequestException as exc:
        raise ServerUnavailable(f"cannot ask {url} for the current package ({_reason(exc)})") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise ServerUnavailable(f"{url} answered {response.status_code} ({_message(response)})",
                                retry_after=_retry_after(response))
    if response.status_code != 200:
        raise RegistrationError(f"{url} answered {response.status_code}: {_message(response)}")
    try:
        body = response.json()
        checksum = body.get("checksum")
    except (ValueError, AttributeError) as exc:
        raise RegistrationError(f"{url} answered without a checksum: {response.text[:200]!r}") from exc
    if not checksum:
        raise RegistrationError(f"{url} answered without a checksum")
    return body


def _get_package_info(session: requests.Session, api_url: str, name: str | None, token: TokenManager | None
                      ) -> dict[str, Any]:
    """Like _request_package_info, but {} when the server answers that it cannot say (fetch_package decides what
    that means); ServerUnavailable when it does not answer (start-up tries again)."""
    headers = _headers(token)  # outside the try: a token failure propagates, it is not the server's answer
    try:
        return _request_package_info(session, api_url, name, headers)
    except ServerUnavailable:
        raise
    except RegistrationError as exc:
        logger.debug("checksum request (name=%s) failed: %s", name, exc)
        return {}


def _checksum_of(info: dict[str, Any]) -> str | None:
    checksum = info.get("checksum")
    return str(checksum).lower() if checksum else None


def verify_package_signature(public_key: str, checksum: str, signature: Any, label: str) -> None:
    """RegistrationError unless `signature` signs the package with this SHA-256 for the key in `public_key`
    (a PEM file). Runs before a package is unpacked, and for a cached one before it is used."""
    from scaleoututil.signing import SignatureMismatch, SigningError, load_public_key, verify_checksum

    if not isinstance(signature, str) or not signature.strip():
        raise PackageRejected(
            f"compute package {label} (sha256 {checksum[:12]}) is not signed, and this client only runs packages "
            f"signed for the public key {public_key} (--package-public-key). Sign it with `scaleout package sign "
            "--key KEY FILE` (or `scaleout package create --sign-key KEY`) and upload it again. Refusing to run it.")
    try:
        verify_checksum(checksum, signature, load_public_key(public_key))
    except SignatureMismatch as exc:
        raise PackageRejected(
            f"compute package {label} (sha256 {checksum[:12]}) fails signature verification with the public key "
            f"{public_key}: {exc}. Refusing to run it.") from exc
    except SigningError as exc:
        raise PackageRejected(f"cannot verify compute package {label}: {exc}. Refusing to run it.") from exc
    logger.info("compute package %s: signature verified with %s", label, public_key)


def _project_root(folder: Path) -> Path:
    if (folder / "scaleout.yaml").is_file():
        return folder
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (child / "scaleout.yaml").is_file():
            return child
    raise PackageRejected(f"the package unpacked into {folder} holds no scaleout.yaml")


@dataclass
class FetchedPackage:
    """A verified, unpacked compute package: its SHA-256, its project folder, and whether it was downloaded
    now (False: it was already in the client's cache)."""

    checksum: str
    folder: Path
    downloaded: bool


def current_package_checksum(api_url: str, *, name: str | None = None, token: TokenManager | None = None,
                             session: requests.Session | None = None) -> str:
    """The SHA-256 of the package the server hands out now (the active one, or the one called `name`).

    One small GET, cheap enough to ask before work; RegistrationError when the server cannot say."""
    info = _request_package_info(session or requests.Session(), api_url, name, _headers(token))
    return str(info["checksum"]).lower()


def fetch_package(api_url: str, workdir: Path, *, name: str | None = None, token: TokenManager | None = None,
                  session: requests.Session | None = None, max_bytes: int | None = None,
                  public_key: str | None = None) -> FetchedPackage:
    """Download, verify (sha256) and unpack the server's compute package (the active one, or `name`).

    Unpacked packages are kept in `workdir/.scaleout/packages/<checksum>/`, so a restart with the same
    package skips the download. `max_bytes` (default DEFAULT_MAX_BYTES) limits both the download and the
    unpacked size; a hostile or oversized archive is refused with nothing unpacked and is deleted.
    With `public_key` (a PEM file), the package must carry an Ed25519 signature for that key
    (scaleoututil.signing), checked before anything is unpacked or a cached copy is used.
    """
    from scaleout.project.config import ProjectError
    from scaleout.project.package import DEFAULT_MAX_BYTES, safe_extract

    limit = max_bytes or DEFAULT_MAX_BYTES
    session = session or requests.Session()
    packages = workdir / PACKAGES_DIR
    info = _get_package_info(session, api_url, name, token)
    announced = _checksum_of(info)
    if announced and (packages / announced).is_dir():
        if public_key:
            verify_package_signature(public_key, announced, info.get("signature"), name or "(the active package)")
        _mark_used(packages / announced)
        logger.info("compute package %s is cached in %s: not downloading it", announced[:12], packages / announced)
        return FetchedPackage(announced, _project_root(packages / announced), downloaded=False)

    params = {"name": name} if name else None
    url = f"{api_url}/api/v1/packages/download"
    archive_dir = workdir / ARCHIVE_DIR
    archive_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading compute package%s from %s", f" {name}" if name else "", api_url)
    try:
        with session.get(url, params=params, headers=_headers(token), stream=True, timeout=REST_TIMEOUT) as response:
            if response.status_code == 404:  # may be uploaded later: start-up waits for it
                raise ServerUnavailable(f"the server has no compute package{f' named {name}' if name else ''} "
                                        f"({_message(response)}): upload one with 'scaleout package set-active', "
                                        "or start the client with --local-package",
                                        retry_after=PACKAGE_MISSING_INTERVAL)
            if response.status_code == 429 or response.status_code >= 500:
                raise ServerUnavailable(f"package download from {url} answered {response.status_code} "
                                        f"({_message(response)})", retry_after=_retry_after(response))
            if response.status_code == 401:
                raise TokenRefused(f"package download refused (401 from {url}): {_message(response)}; "
                                   "check --token")
            if response.status_code != 200:
                raise RegistrationRefused(f"package download failed ({response.status_code} from {url}): "
                                          f"{_message(response)}")
            filename = _filename(response) or "package.tgz"
            if not filename.endswith(ARCHIVE_SUFFIXES):
                raise PackageRejected(f"the server sent package '{filename}', which is not a .tgz/.tar.gz/.tar.bz2")
            _check_download_size(response.headers.get("Content-Length"), limit, filename)
            archive = archive_dir / filename
            partial = archive.with_name(f"{filename}.{uuid.uuid4().hex}.partial")
            digest = hashlib.sha256()
            received = 0
            try:
                with open(partial, "wb") as fh:
                    for piece in response.iter_content(chunk_size=1024 * 1024):
                        received += len(piece)
                        _check_download_size(received, limit, filename)
                        digest.update(piece)
                        fh.write(piece)
                partial.replace(archive)
            finally:
                partial.unlink(missing_ok=True)  # a broken download must not pile up in the archive folder
    except requests.RequestException as exc:
        raise ServerUnavailable(f"package download from {url} failed ({_reason(exc)})") from exc
    actual = digest.hexdigest()

    by_file = _get_package_info(session, api_url, filename, token)
    expected = _checksum_of(by_file) or announced
    signature = by_file.get("signature") if _checksum_of(by_file) else info.get("signature")
    if not expected:
        archive.unlink(missing_ok=True)
        raise PackageRejected(f"the server gave no checksum for package {filename} "
                                f"(GET {api_url}/api/v1/packages/checksum), so it cannot be verified")
    if expected != actual:
        archive.unlink(missing_ok=True)
        raise PackageRejected(f"package {filename} is corrupt or was tampered with: its sha256 is {actual}, "
                                f"the server says {expected}. Refusing to run it.")
    if public_key:
        try:
            verify_package_signature(public_key, actual, signature, filename)
        except RegistrationError:
            archive.unlink(missing_ok=True)
            raise

    target = packages / actual
    if not target.is_dir():
        try:
            safe_extract(archive, target, max_bytes=limit)
        except ProjectError as exc:
            if not target.is_dir():  # else another client sharing this folder unpacked it first
                archive.unlink(missing_ok=True)
                raise PackageRejected(f"refusing compute package {filename} (sha256 {actual[:12]}): {exc}") from exc
    logger.info("compute package %s (%s) unpacked into %s", filename, actual[:12], target)
    _mark_used(target)
    archive.unlink(missing_ok=True)  # verified and unpacked: the folder is the cache
    prune_packages(packages)
    return FetchedPackage(actual, _project_root(target), downloaded=True)


def _mark_used(folder: Path) -> None:
    try:
        os.utime(folder)
    except OSError:
        pass


def _last_used(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:  # removed meanwhile by another client sharing the folder
        return 0.0


def prune_packages(packages: Path, keep: int = KEEP_PACKAGES) -> list[Path]:
    """Delete all but the `keep` most recently used unpacked packages; return what was deleted.

    Why: every activated package is unpacked once per client, so a long-lived client would keep every
    version it ever ran. The few most recent stay, so switching back to one is still free, and the one
    in use (the newest) and the one before it (what a failed switch falls back to) are never deleted.
    """
    try:
        folders = [p for p in packages.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    folders.sort(key=_last_used, reverse=True)
    removed: list[Path] = []
    for folder in folders[max(keep, 2):]:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        logger.info("removed %d compute package(s) not used recently from %s", len(removed), packages)
    return removed


def _check_download_size(size: int | str | None, limit: int, filename: str) -> None:
    try:
        value = int(size) if size is not None else 0
    except ValueError:
        return
    if value > limit:
        raise PackageRejected(f"compute package {filename} is larger than this client's limit of {limit} bytes; "
                                "refusing it (raise the limit with --max-package-size or $SCALEOUT_MAX_PACKAGE_SIZE)")
