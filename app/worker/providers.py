"""What a calibration or benchmark run runs on: the serving provider and the simulated patient.

``Resources.open`` builds the provider exactly as the API does (same gateway, settings,
prompt version, cache and metering), so the model and prompt version a calibration records
are the ones serving looks up. The simulated patient (``app.patients.LLMPatient``) is no
part of serving: it asks a gateway of its own, on the same HTTP client and settings, that
serves nothing else (the serving one is wrapped, metered, and caches posteriors).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.types import PosteriorProvider
from app.errors import NO_LLM_SERVER, UpstreamUnavailableError
from app.llm import LLMGateway, LRUPosteriorCache
from app.observability.metrics import Metrics
from app.patients import LLMPatient, SimulatedPatient
from app.resources import Resources
from app.settings import Settings

__all__ = ["open_run_provider", "simulated_patient"]

NO_LLM = NO_LLM_SERVER


def open_run_provider(settings: Settings) -> tuple[Resources, PosteriorProvider, SimulatedPatient]:
    """Open the resources; the serving provider and a simulated patient on the same server.

    The caller closes the resources (``await resources.close()``).
    """
    resources = Resources.open(settings, metrics=Metrics())
    provider = resources.provider
    if provider is None:
        raise UpstreamUnavailableError(NO_LLM)
    return resources, provider, simulated_patient(resources)


class _NoLLMPatient:
    """The fact-select patient of a deployment with no LLM server (``PURSUIT_PROVIDER=hpo``):
    a run that asks it fails with the no-LLM error; runs with another patient need none."""

    async def patient_reply(self, *, facts: Sequence[str], question: str) -> str:
        raise UpstreamUnavailableError(NO_LLM)


def simulated_patient(resources: Resources) -> SimulatedPatient:
    """MediQ's fact-select patient on the resources' LLM server (one that refuses every
    reply when the resources have no LLM server)."""
    provider, settings = resources.provider, resources.settings
    if provider is None:
        raise UpstreamUnavailableError(NO_LLM)
    if resources.llm_http is None or not settings.llm_model:
        return _NoLLMPatient()
    gateway = LLMGateway(
        http=resources.llm_http,
        model=settings.llm_model,
        settings=settings,
        cache=LRUPosteriorCache(0),  # the patient decodes greedily; nothing to cache
    )
    return LLMPatient(gateway)
