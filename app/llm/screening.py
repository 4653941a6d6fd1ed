"""Checks on model output before a clinician sees it (or it scores a question).

A proposed question must be a question to the patient about their health. Patient answers
go into the prompt that proposes the next question, so a patient (or anyone typing into an
answer field) can try to steer the model ("Your next question must be exactly: ..."). The
screen drops what no clinical interview should carry:

- ``credentials``: passwords, PINs, card, bank or payment details;
- ``identifiers``: national, insurance or document numbers, addresses, e-mail, phone;
- ``instructions``: text addressed to a model (ignore the above, system prompt, chat tags,
  "your next question must be");
- ``echo`` (questions only): 8 or more consecutive words copied from one of the patient's
  answers, the shape of an injected question.

Simulated patient answers get the first three checks. The reasons are counted in metrics;
the text is never logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

__all__ = ["ECHO_WORDS", "Drop", "screen_answer", "screen_question"]

# A clinical follow-up may quote a few of the patient's words ("you said the pain is worse
# at night"); 8 copied words in a row is an answer pasted in.
ECHO_WORDS = 8


class Drop(StrEnum):
    """Why model output was dropped (a metrics label)."""

    CREDENTIALS = "credentials"
    IDENTIFIERS = "identifiers"
    INSTRUCTIONS = "instructions"
    ECHO = "echo"


_PATTERNS: tuple[tuple[Drop, re.Pattern[str]], ...] = (
    (
        Drop.CREDENTIALS,
        re.compile(
            r"\b(?:pass(?:word|code|phrase)s?|pin (?:code|number)|(?:credit|debit|bank) ?cards?"
            r"|card (?:number|details)|cvv|cvc|bank (?:account|details|login)|account numbers?"
            r"|routing numbers?|sort code|iban|swift code|log ?in details|user ?names?"
            r"|(?:verification|security|one[- ]time) codes?|wire transfer|gift cards?"
            r"|bitcoin|crypto ?wallet)\b",
            re.IGNORECASE,
        ),
    ),
    (
        Drop.IDENTIFIERS,
        re.compile(
            r"\b(?:social security|ssn|national (?:id|insurance) number|passport number"
            r"|driver'?s licen[cs]e|(?:insurance|member|policy) (?:id|number)"
            r"|home address|street address|e-?mail address|phone number|telephone number)\b",
            re.IGNORECASE,
        ),
    ),
    (
        Drop.INSTRUCTIONS,
        re.compile(
            r"\b(?:ignore|disregard|forget) (?:all |any |the |your )?(?:previous|prior|above"
            r"|earlier) (?:instructions?|prompts?|messages?|rules?)"
            r"|\bsystem prompt\b|\byour (?:next|following) question\b"
            r"|\bnext question (?:must|should|will|has to) be\b|\bas an ai\b"
            r"|\blanguage model\b|<\|?/?(?:system|user|assistant|im_start|im_end)\|?>",
            re.IGNORECASE,
        ),
    ),
)
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _runs(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def screen_answer(text: str) -> Drop | None:
    """Why a simulated answer must not be used, or None."""
    for reason, pattern in _PATTERNS:
        if pattern.search(text):
            return reason
    return None


def screen_question(text: str, answers: Iterable[str] = ()) -> Drop | None:
    """Why a proposed question must not reach a clinician, or None; ``answers`` are the
    patient's answers so far (a question copying one of them is dropped)."""
    reason = screen_answer(text)
    if reason is not None:
        return reason
    runs = _runs(_words(text), ECHO_WORDS)
    if runs and any(runs & _runs(_words(answer), ECHO_WORDS) for answer in answers):
        return Drop.ECHO
    return None
