"""Answer options: the structured answers a question may offer (yes / no / unsure, or a bank's).

An option is a suggestion for the front end, never a change to what the engine sees: an
answer given as an option is its ``display`` text, exactly what typing that text would give,
so the posterior, the stored transcript and calibration all read the same words. Free text
stays possible for every question. Options come from a named bank (``query_banks.json``,
per question or per bank) or from the posterior provider (the HPO knowledge base asks
yes/no questions by nature); generated (LLM) questions have none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from app.errors import InvalidInputError

__all__ = [
    "MAX_OPTIONS",
    "OPTION_PRESETS",
    "YES_NO_UNSURE",
    "AnswerOption",
    "AnswerOptions",
    "OffersAnswerOptions",
    "parse_options",
    "provider_options",
]

MAX_OPTIONS = 12


@dataclass(frozen=True, slots=True)
class AnswerOption:
    """One structured answer: a stable ``code`` and the ``display`` text it stands for."""

    code: str
    display: str


AnswerOptions = tuple[AnswerOption, ...]

YES_NO_UNSURE: AnswerOptions = (
    AnswerOption("yes", "Yes"),
    AnswerOption("no", "No"),
    AnswerOption("unsure", "Unsure"),
)
# Named option lists a bank file may refer to instead of spelling them out.
OPTION_PRESETS: Mapping[str, AnswerOptions] = {
    "yes-no-unsure": YES_NO_UNSURE,
    "yes-no": YES_NO_UNSURE[:2],
}
_MAX_CODE = 64
_MAX_DISPLAY = 200


def parse_options(raw: Any, *, where: str) -> AnswerOptions | None:
    """A bank file's ``options``: null (free text), a preset's name, or a list of
    ``{"code", "display"}`` objects; anything else is an ``InvalidInputError``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        preset = OPTION_PRESETS.get(raw)
        if preset is None:
            raise InvalidInputError(
                f"{where}: unknown options preset {raw!r}; presets: {', '.join(OPTION_PRESETS)}"
            )
        return preset
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_OPTIONS:
        raise InvalidInputError(
            f"{where}: options must be a preset name or a list of 2-{MAX_OPTIONS} "
            '{"code", "display"} objects'
        )
    options: list[AnswerOption] = []
    for entry in raw:
        code = entry.get("code") if isinstance(entry, dict) else None
        display = entry.get("display") if isinstance(entry, dict) else None
        if not (
            isinstance(code, str)
            and isinstance(display, str)
            and 0 < len(code.strip()) <= _MAX_CODE
            and 0 < len(display.strip()) <= _MAX_DISPLAY
            and set(entry) <= {"code", "display"}
        ):
            raise InvalidInputError(
                f"{where}: each option is {{'code': str (1-{_MAX_CODE}), "
                f"'display': str (1-{_MAX_DISPLAY})}}"
            )
        options.append(AnswerOption(code.strip(), display.strip()))
    if len({o.code for o in options}) != len(options):
        raise InvalidInputError(f"{where}: option codes must be distinct")
    return tuple(options)


@runtime_checkable
class OffersAnswerOptions(Protocol):
    """A posterior provider whose questions have answer options of their own."""

    def answer_options(self, question: str) -> AnswerOptions | None:
        """The options of one of this provider's questions (None: free text)."""
        ...


def provider_options(provider: object, question: str) -> AnswerOptions | None:
    """The provider's options for ``question``, if it offers any."""
    if isinstance(provider, OffersAnswerOptions):
        return provider.answer_options(question)
    return None
