"""REST client of the controller: `APIClient` and the chunked upload it (and the CLI) use."""

from scaleoututil.api.client import APIClient
from scaleoututil.api.upload import UploadError, chunked_upload

__all__ = ["APIClient", "UploadError", "chunked_upload"]
