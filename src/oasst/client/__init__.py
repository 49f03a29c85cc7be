"""Typed async HTTP clients of the oasst services (backend ``/api/v1`` today).

Used by the website, the Discord bot, the CLI and the benchmarks; imports only the wire models of
:mod:`oasst.protocol`, never a service's own code.
"""

from oasst.client.backend import API_PREFIX, BackendClient, Interaction, user_header
from oasst.client.errors import ApiErrorCode, OasstApiError, OasstConnectionError

__all__ = [
    "API_PREFIX",
    "ApiErrorCode",
    "BackendClient",
    "Interaction",
    "OasstApiError",
    "OasstConnectionError",
    "user_header",
]
