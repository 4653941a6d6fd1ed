"""FHIR R5 and R4: which one a request asks for, and Pursuit's R5 resources written as R4.

Pursuit builds every resource as R5 (5.0.0). A client names another version with the
``fhirVersion`` parameter of ``application/fhir+json`` (``Content-Type`` for what it sends,
``Accept`` for what it wants back); R4 (4.0.1) replies are the same resources with the few
R5-only elements Pursuit uses rewritten (``downgrade``). What differs, for these resources:
R5 has no ``choice``/``open-choice`` item types, and says what ``answerOption`` allows with
``answerConstraint`` (absent in R4). Condition, RiskAssessment, Bundle, OperationOutcome and
QuestionnaireResponse need no change. fhir.resources 8 ships R5 and R4B (4.3.0), no R4: the
tests validate R4 output with R4B, whose Questionnaire, QuestionnaireResponse, Condition,
RiskAssessment, Bundle, OperationOutcome and CapabilityStatement are R4's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.errors import NotAcceptableError, UnsupportedMediaTypeError
from app.fhir.vocab import FHIR_MEDIA_TYPE, FHIR_R4_VERSION, FHIR_VERSION

Json = dict[str, Any]


class FhirVersion(StrEnum):
    """A FHIR release Pursuit speaks; the value is the ``fhirVersion`` media-type parameter."""

    R4 = "4.0"
    R5 = "5.0"

    @property
    def full(self) -> str:
        """The release's full version (CapabilityStatement.fhirVersion)."""
        return FHIR_R4_VERSION if self is FhirVersion.R4 else FHIR_VERSION

    @property
    def media_type(self) -> str:
        return f"{FHIR_MEDIA_TYPE}; fhirVersion={self.value}"


DEFAULT_FHIR_VERSION = FhirVersion.R5
# What a client may write for a version: the parameter ("4.0", also "4.0.1") or the release.
_SPELLINGS = {
    **{v.value: v for v in FhirVersion},
    **{v.full: v for v in FhirVersion},
    "r4": FhirVersion.R4,
    "r5": FhirVersion.R5,
}


@dataclass(frozen=True)
class MediaRange:
    """One entry of a Content-Type or Accept header: type, parameters, quality."""

    media_type: str
    params: dict[str, str]
    q: float = 1.0


def parse_media_ranges(header: str) -> list[MediaRange]:
    """``a/b; x=1, c/d; q=0.5`` as media ranges (malformed parameters are skipped)."""
    ranges: list[MediaRange] = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, sep, value = piece.partition("=")
            if sep:
                params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        ranges.append(MediaRange(pieces[0].lower(), params, q))
    return ranges


def _version_param(value: str) -> FhirVersion | None:
    return _SPELLINGS.get(value.strip().lower())


def request_version(content_type: str) -> FhirVersion | None:
    """The version a request body declares in its Content-Type (None: not declared)."""
    for media in parse_media_ranges(content_type)[:1]:
        if "fhirversion" in media.params:
            version = _version_param(media.params["fhirversion"])
            if version is None:
                raise UnsupportedMediaTypeError(_unsupported("Content-Type"))
            return version
    return None


def accepted_version(accept: str) -> FhirVersion | None:
    """The version the Accept header asks for with ``fhirVersion`` (None: not asked).

    The most preferred ``application/fhir+json`` range that names a version decides; if
    every such range names a version Pursuit does not speak, that is a 406.
    """
    named = [
        m
        for m in parse_media_ranges(accept)
        if m.media_type == FHIR_MEDIA_TYPE and "fhirversion" in m.params and m.q > 0
    ]
    if not named:
        return None
    for media in sorted(named, key=lambda m: -m.q):
        version = _version_param(media.params["fhirversion"])
        if version is not None:
            return version
    raise NotAcceptableError(_unsupported("Accept"))


def _unsupported(header: str) -> str:
    spoken = ", ".join(f"{v.value} ({v.name})" for v in FhirVersion)
    return f"the {header} header names a fhirVersion Pursuit does not speak; it speaks {spoken}"


def wants_fhir_errors(accept: str) -> bool:
    """Whether the client prefers ``application/fhir+json`` to problem+json (OperationOutcome).

    Only an explicit ``application/fhir+json`` counts: ``*/*`` (or no Accept) keeps
    problem+json, and so does a problem+json at least as preferred.
    """
    fhir = problem = 0.0
    for media in parse_media_ranges(accept):
        if media.media_type == FHIR_MEDIA_TYPE:
            fhir = max(fhir, media.q)
        elif media.media_type == "application/problem+json":
            problem = max(problem, media.q)
    return fhir > 0 and fhir > problem


@dataclass(frozen=True)
class Negotiated:
    """The FHIR versions of a request's body and of its reply, and the reply's media type."""

    body: FhirVersion
    reply: FhirVersion
    # Whether the client named a version: the reply's Content-Type then names it too (an
    # unversioned request keeps today's plain application/fhir+json).
    named: bool

    @property
    def media_type(self) -> str:
        return self.reply.media_type if self.named else FHIR_MEDIA_TYPE


def negotiate(*, content_type: str, accept: str) -> Negotiated:
    """Body: Content-Type's version, else Accept's; reply: Accept's, else Content-Type's;
    neither names one: R5 (the default)."""
    sent = request_version(content_type)
    wanted = accepted_version(accept)
    return Negotiated(
        body=sent or wanted or DEFAULT_FHIR_VERSION,
        reply=wanted or sent or DEFAULT_FHIR_VERSION,
        named=sent is not None or wanted is not None,
    )


def downgrade(resource: Json, version: FhirVersion) -> Json:
    """``resource`` (an R5 resource Pursuit built) in ``version``; a copy, or itself for R5."""
    if version is FhirVersion.R5:
        return resource
    out = copy.deepcopy(resource)
    _downgrade_in_place(out)
    return out


def _downgrade_in_place(node: Any) -> None:
    if isinstance(node, list):
        for child in node:
            _downgrade_in_place(child)
    elif isinstance(node, dict):
        if node.get("resourceType") == "Questionnaire":
            for item in node.get("item") or []:
                _r4_item(item)
        for value in node.values():
            if isinstance(value, dict | list):
                _downgrade_in_place(value)


def _r4_item(item: Json) -> None:
    """An R5 Questionnaire item as R4: options become ``choice`` or ``open-choice``."""
    constraint = item.pop("answerConstraint", None)
    if item.get("answerOption") or item.get("type") == "coding":
        # R5 "optionsOrString"/"optionsOrType" allow free text too: R4 "open-choice".
        open_choice = constraint in ("optionsOrString", "optionsOrType")
        item["type"] = "open-choice" if open_choice else "choice"
    for child in item.get("item") or []:
        _r4_item(child)
