"""Render conversations with a chat template into token ids, with a mask of the assistant's tokens.

Each conversation is rendered once as text. The assistant's spans are found by rendering the turns before
each assistant message with the generation prompt (``before``) and through it (``through``): the text
between is what the model must produce, its end-of-turn marker included. The pieces between span edges
are tokenised one by one (``add_special_tokens=False``: the template writes any BOS itself), so a span
never shares a token with the prompt before it, and the prompt of the last turn tokenises exactly as it
does when the model is asked to generate from it.

A template that renders an earlier turn differently once later turns follow (one that drops earlier
reasoning, say) has no such spans; it is refused with the row that shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from distil.errors import ConfigError, DataError
from distil.tasks.chat.reader import Message

__all__ = ["BUILTIN_TEMPLATES", "Rendered", "render", "resolve_template"]

# ChatML (Qwen's, OpenAI's) in its plain form: the template a tokenizer without one can be given by name.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# One line per turn ending in the tokenizer's end-of-sequence token, which so ends every assistant turn
# (the model learns to stop where generation stops): for a tokenizer without chat tokens of its own.
PLAIN = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)
BUILTIN_TEMPLATES = {"chatml": CHATML, "plain": PLAIN}


def resolve_template(tokenizer: PreTrainedTokenizerBase, given: str | None, source: str) -> str:
    """The chat template to render with: ``given`` (a built-in name or a .jinja file) or the tokenizer's.

    Raises:
        ConfigError: Neither exists, or the file cannot be read.
    """
    if given is None:
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):  # several named templates: the default one renders conversations
            template = template.get("default")
        if not template:
            raise ConfigError(
                f"The tokenizer of {source!r} has no chat template; set data.chat_template to a .jinja file "
                f"or to one of {', '.join(BUILTIN_TEMPLATES)} (it is saved with the student's tokenizer)."
            )
        return str(template)
    if given in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[given]
    path = Path(given).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"data.chat_template {given!r} is neither a file nor a built-in template "
            f"({', '.join(BUILTIN_TEMPLATES)})."
        )
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Rendered:
    """One tokenised conversation.

    Attributes:
        input_ids: The whole conversation's tokens.
        assistant: 1 where the token belongs to an assistant turn (its end-of-turn marker included).
        turn_starts: Where each assistant turn starts: the tokens before it are the prompt a model
            completes when it generates that turn (the generation prompt included).
    """

    input_ids: list[int]
    assistant: list[int]
    turn_starts: list[int]

    def prompt_length(self, max_length: int) -> int:
        """The prompt of the last assistant turn that starts within the first ``max_length`` tokens."""
        return max(s for s in self.turn_starts if s < max_length)


def _text(tokenizer: PreTrainedTokenizerBase, template: str, messages: list[Message], prompt: bool) -> str:
    out = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=prompt
    )
    return str(out)


def render(
    tokenizer: PreTrainedTokenizerBase, template: str, conversation: list[Message], where: str
) -> Rendered:
    """Tokenise ``conversation`` with ``template``; see the module docstring.

    Raises:
        DataError: The template renders an earlier turn differently once later turns follow.
    """
    full = _text(tokenizer, template, conversation, prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = _text(tokenizer, template, conversation[:i], prompt=True)
        through = _text(tokenizer, template, conversation[: i + 1], prompt=False)
        start = spans[-1][1] if spans else 0
        if not (through.startswith(before) and full.startswith(through)) or len(before) < start:
            raise DataError(
                f"{where}: the chat template renders turn {i + 1} differently once later turns follow, so "
                "the assistant's tokens cannot be told apart; give data.chat_template one that renders each "
                "turn the same whatever follows."
            )
        spans.append((len(before), len(through)))
    ids: list[int] = []
    assistant: list[int] = []
    starts: list[int] = []
    edge = 0
    for begin, end in spans:
        for piece, flag in ((full[edge:begin], 0), (full[begin:end], 1)):
            if piece:
                if flag:
                    starts.append(len(ids))
                tokens = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += tokens
                assistant += [flag] * len(tokens)
        edge = end
    if full[edge:]:
        tokens = tokenizer(full[edge:], add_special_tokens=False)["input_ids"]
        ids += tokens
        assistant += [0] * len(tokens)
    return Rendered(ids, assistant, starts)


def check_same_template(
    teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase, given: str | None
) -> None:
    """Refuse a teacher and a student whose own chat templates differ (unless ``data.chat_template`` is set).

    Distillation compares the two models token by token on one rendering of each conversation; the
    student's template decides it, and a teacher trained on another would be scored out of its format.

    Raises:
        ConfigError: Both tokenizers have templates, and they differ.
    """
    if given is not None:
        return
    a, b = getattr(teacher, "chat_template", None), getattr(student, "chat_template", None)
    if a and b and a != b:
        raise ConfigError(
            "The teacher's and the student's tokenizers have different chat templates; the student's would "
            "render the conversations the teacher is scored on. Set data.chat_template (a .jinja file, or "
            "the teacher's) to render both the same way, or start the student from the teacher's family."
        )
