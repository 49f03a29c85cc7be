"""Typed async HTTP clients of the oasst services: the backend (``/api/v1``) and the inference chat API.

Used by the website, the Discord bot, the CLI and the benchmarks; imports only the wire models of
:mod:`oasst.protocol` and :mod:`oasst.inference.protocol`, never a service's own code.
"""

from oasst.client.backend import API_PREFIX, BackendClient, Interaction, user_header
from oasst.client.errors import ApiErrorCode, OasstApiError, OasstConnectionError
from oasst.client.inference import ExportedChat, InferenceClient, InferenceErrorCode, StreamingASGITransport

__all__ = [
    "API_PREFIX",
    "ApiErrorCode",
    "BackendClient",
    "ExportedChat",
    "InferenceClient",
    "InferenceErrorCode",
    "Interaction",
    "OasstApiError",
    "OasstConnectionError",
    "StreamingASGITransport",
    "user_header",
]
