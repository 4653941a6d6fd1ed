"""The question policy's CLI options, declared once for every command that takes them.

``policy_options()`` adds one Typer option per ``QuestionPolicy`` field to a command (flag
names below, the policy's defaults (``DEFAULTS`` over the field defaults), help from the
field descriptions) and hands the command the chosen values as ``question_fields``, a dict
for ``RunSpec.create``/``QuestionPolicy.build``. ``pursuit calibrate`` and ``pursuit
bench`` both use it, so their flags cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

import typer

from app.engine import QuestionSource
from app.engine.policy import DEFAULTS, QuestionPolicy

__all__ = ["FLAGS", "policy_options"]

# Field -> its flags: the field's own name first, then older flags scripts still use
# (``--bank`` and ``--n-questions`` predate the shared type).
FLAGS: dict[str, tuple[str, ...]] = {
    "policy": ("--policy",),
    "alpha": ("--alpha",),
    "question_source": ("--question-source",),
    "question_bank_name": ("--question-bank-name", "--bank"),
    "n_candidate_questions": ("--n-candidate-questions", "--n-questions"),
    "n_answers": ("--n-answers",),
    "answer_source": ("--answer-source",),
    "objective": ("--objective",),
    "selection_calibration_id": ("--selection-calibration",),
}

F = TypeVar("F", bound=Callable[..., Any])


def _option(name: str) -> inspect.Parameter:
    info = QuestionPolicy.model_fields[name]
    default = DEFAULTS.get(name, info.default)
    if isinstance(default, Enum):
        default = default.value
    annotation: Any = type(default)
    if name == "selection_calibration_id":
        annotation = str | None
    help_text = info.description
    if isinstance(info.default, Enum):
        choices = " | ".join(m.value for m in type(info.default))
        help_text = f"{choices}. {help_text}"
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *FLAGS[name], help=help_text),
        annotation=annotation,
    )


def policy_options(*, skip: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Add the policy's options (except ``skip``) to a command taking ``question_fields``."""
    names = [n for n in FLAGS if n not in skip]

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name != "question_fields"]
        params = [*own, *(_option(n) for n in names)]
        params.sort(key=lambda p: p.kind)  # keyword-only after the rest

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            fields = {n: kwargs.pop(n) for n in names}
            if fields.get("question_source") != QuestionSource.BANK.value:
                # --question-bank-name's default is for bank sources
                fields["question_bank_name"] = None
            if fields.get("selection_calibration_id"):
                try:
                    fields["selection_calibration_id"] = uuid.UUID(
                        fields["selection_calibration_id"]
                    )
                except ValueError:
                    raise typer.BadParameter(
                        "not a calibration id", param_hint=FLAGS["selection_calibration_id"][0]
                    ) from None
            return fn(**kwargs, question_fields=fields)

        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return command  # type: ignore[return-value]

    return wrap
