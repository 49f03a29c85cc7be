"""The one prompt format of oasst, shared by training and inference.

``<|system|>…<eos>`` (optional), then alternating ``<|prompter|>…<eos>`` and ``<|assistant|>…<eos>``, with no
separators, where ``<eos>`` is the tokenizer's end-of-sequence token. It is stored in every model directory
as the tokenizer's chat template (:data:`CHAT_TEMPLATE`), so any engine that applies chat templates (vLLM,
TGI, llama.cpp, transformers) formats prompts exactly as training did. The ``{% generation %}`` markers
tell transformers which tokens are the assistant's, so SFT trains only those.

:func:`render` is the same format in plain Python, for tests and for tools without a tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "ASSISTANT_TOKEN",
    "CHAT_TEMPLATE",
    "PROMPTER_TOKEN",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "SYSTEM_TOKEN",
    "render",
]

SYSTEM_TOKEN = "<|system|>"
PROMPTER_TOKEN = "<|prompter|>"
ASSISTANT_TOKEN = "<|assistant|>"
SPECIAL_TOKENS = (SYSTEM_TOKEN, PROMPTER_TOKEN, ASSISTANT_TOKEN)
# chat roles (OpenAI style) -> the marker that opens their turn; "prompter" is accepted as "user"
ROLE_TOKENS = {
    "system": SYSTEM_TOKEN,
    "user": PROMPTER_TOKEN,
    "prompter": PROMPTER_TOKEN,
    "assistant": ASSISTANT_TOKEN,
}

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'user' or message['role'] == 'prompter' %}"
    "{{ '<|prompter|>' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def render(messages: Iterable[Mapping[str, str]], eos: str, *, add_generation_prompt: bool = False) -> str:
    """The conversation as the model sees it (what :data:`CHAT_TEMPLATE` renders)."""
    parts: list[str] = []
    for message in messages:
        role = message["role"]
        if role not in ROLE_TOKENS:
            raise ValueError(f"unknown role: {role}")
        parts.append(ROLE_TOKENS[role] + message["content"] + eos)
    if add_generation_prompt:
        parts.append(ASSISTANT_TOKEN)
    return "".join(parts)
