"""Inference: the chat service (``server``) and the workers that run models (``worker``).

``protocol`` holds the wire models both sides share: the worker websocket protocol, the chat API's
request and response bodies, and the server-sent events of a message stream. Only ``worker`` imports
torch and transformers; the server installs and starts without them.
"""
