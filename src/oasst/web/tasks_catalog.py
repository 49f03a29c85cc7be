"""The task types as the website offers them: URL slug, backend type, group and the reply they expect."""

from __future__ import annotations

from dataclasses import dataclass

from oasst.web.i18n import gettext as _


@dataclass(frozen=True)
class TaskKind:
    slug: str  # the page: /tasks/<slug>
    request_type: str  # TaskRequestType sent to the backend
    group: str  # create | evaluate | label | random

    @property
    def title(self) -> str:
        return _(TITLES[self.slug])

    @property
    def description(self) -> str:
        return _(DESCRIPTIONS[self.slug])


TITLES = {
    "random": "Start a random task",
    "initial_prompt": "Write an initial prompt",
    "assistant_reply": "Reply as the assistant",
    "prompter_reply": "Reply as the user",
    "rank_assistant_replies": "Rank assistant replies",
    "rank_prompter_replies": "Rank user replies",
    "rank_initial_prompts": "Rank initial prompts",
    "label_initial_prompt": "Label an initial prompt",
    "label_prompter_reply": "Label a user reply",
    "label_assistant_reply": "Label an assistant reply",
}
DESCRIPTIONS = {
    "random": "Help where help is needed most.",
    "initial_prompt": "Ask the assistant something a person would ask.",
    "assistant_reply": "Write the answer you would want from a great assistant.",
    "prompter_reply": "Continue the conversation as the person asking.",
    "rank_assistant_replies": "Order the assistant's replies from best to worst.",
    "rank_prompter_replies": "Order the user's replies from best to worst.",
    "rank_initial_prompts": "Order the prompts from best to worst.",
    "label_initial_prompt": "Rate a prompt: spam, quality, tone.",
    "label_prompter_reply": "Rate a user reply: spam, quality, tone.",
    "label_assistant_reply": "Rate an assistant reply: helpfulness, quality, safety.",
}
TASK_KINDS: list[TaskKind] = [
    TaskKind("random", "random", "random"),
    TaskKind("initial_prompt", "initial_prompt", "create"),
    TaskKind("assistant_reply", "assistant_reply", "create"),
    TaskKind("prompter_reply", "prompter_reply", "create"),
    TaskKind("rank_assistant_replies", "rank_assistant_replies", "evaluate"),
    TaskKind("rank_prompter_replies", "rank_prompter_replies", "evaluate"),
    TaskKind("rank_initial_prompts", "rank_initial_prompts", "evaluate"),
    TaskKind("label_initial_prompt", "label_initial_prompt", "label"),
    TaskKind("label_prompter_reply", "label_prompter_reply", "label"),
    TaskKind("label_assistant_reply", "label_assistant_reply", "label"),
]
BY_SLUG = {kind.slug: kind for kind in TASK_KINDS}
