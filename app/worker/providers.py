"""The serving provider for calibration and benchmark processes, plus the simulated patient.

``Resources.open`` builds the provider exactly as the API does (same gateway, settings,
prompt version, cache and metering), so the model and prompt version a calibration records
are the ones serving looks up. The simulated patient (``patient_reply``) is no part of
serving: when the serving provider does not expose it (it is wrapped, e.g. metered), a
second gateway on the same HTTP client and settings supplies it.
"""

from __future__ import annotations

from app.calibrations.interviews import SimulatedPatient
from app.engine.types import PosteriorProvider
from app.errors import NO_LLM_SERVER, UpstreamUnavailableError
from app.llm import LLMGateway, LRUPosteriorCache
from app.observability.metrics import Metrics
from app.resources import Resources
from app.settings import Settings

__all__ = ["open_serving", "simulated_patient"]

NO_LLM = NO_LLM_SERVER


def open_serving(settings: Settings) -> tuple[Resources, PosteriorProvider, SimulatedPatient]:
    """Open the resources; the serving provider and a simulated patient on the same server.

    The caller closes the resources (``await resources.close()``).
    """
    resources = Resources.open(settings, metrics=Metrics())
    provider = resources.provider
    if provider is None:
        raise UpstreamUnavailableError(NO_LLM)
    return resources, provider, simulated_patient(resources)


def simulated_patient(resources: Resources) -> SimulatedPatient:
    """The simulated patient on the resources' LLM server (the provider itself, when it
    exposes one)."""
    provider, settings = resources.provider, resources.settings
    if provider is None or resources.llm_http is None or not settings.llm_model:
        raise UpstreamUnavailableError(NO_LLM)
    if callable(getattr(provider, "patient_reply", None)):
        return provider  # type: ignore[return-value]
    return LLMGateway(
        http=resources.llm_http,
        model=settings.llm_model,
        settings=settings,
        cache=LRUPosteriorCache(0),  # the patient decodes greedily; nothing to cache
    )
