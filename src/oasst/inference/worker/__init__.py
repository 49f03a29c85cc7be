"""The inference worker: runs a model and serves it to the inference server over a websocket.

``engines`` defines what a model runner is (:class:`~oasst.inference.worker.engines.Engine`);
``engine_transformers`` runs a Hugging Face model in this process, ``engine_openai`` relays to an
OpenAI-compatible server (vLLM, TGI, llama.cpp, oasst's own ``/v1``); ``truncation`` fits conversations
into the context; ``runner`` is the websocket client. Only ``engine_transformers`` imports torch, and
only when a model is loaded.
"""

from oasst.inference.worker.engines import Engine, EngineError, Finished, StopBuffer, collect, make_engine

__all__ = ["Engine", "EngineError", "Finished", "StopBuffer", "collect", "make_engine"]
