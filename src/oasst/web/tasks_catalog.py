"""The task types as the website offers them: URL slug, backend type, group and the reply they expect."""

from __future__ import annotations

from dataclasses import dataclass

from oasst.web.i18n import N_
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
    "random": N_("Start a random task"),
    "initial_prompt": N_("Write an initial prompt"),
    "assistant_reply": N_("Reply as the assistant"),
    "prompter_reply": N_("Reply as the user"),
    "rank_assistant_replies": N_("Rank assistant replies"),
    "rank_prompter_replies": N_("Rank user replies"),
    "rank_initial_prompts": N_("Rank initial prompts"),
    "label_initial_prompt": N_("Label an initial prompt"),
    "label_prompter_reply": N_("Label a user reply"),
    "label_assistant_reply": N_("Label an assistant reply"),
}
DESCRIPTIONS = {
    "random": N_("Help where help is needed most."),
    "initial_prompt": N_("Ask the assistant something a person would ask."),
    "assistant_reply": N_("Write the answer you would want from a great assistant."),
    "prompter_reply": N_("Continue the conversation as the person asking."),
    "rank_assistant_replies": N_("Order the assistant's replies from best to worst."),
    "rank_prompter_replies": N_("Order the user's replies from best to worst."),
    "rank_initial_prompts": N_("Order the prompts from best to worst."),
    "label_initial_prompt": N_("Rate a prompt: spam, quality, tone."),
    "label_prompter_reply": N_("Rate a user reply: spam, quality, tone."),
    "label_assistant_reply": N_("Rate an assistant reply: helpfulness, quality, safety."),
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
