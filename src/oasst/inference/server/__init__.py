"""The inference server: chats, a work queue, the worker websocket gateway and an OpenAI-compatible API.

``create_app(settings)`` in :mod:`oasst.inference.server.app` builds it; nothing happens at import time.
"""
