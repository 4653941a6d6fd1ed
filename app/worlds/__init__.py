"""Controlled worlds: posterior providers without an LLM, where the truth is known.

``tabular`` (a class x attribute Bayes table, with knobs that miscalibrate it on purpose)
and ``kb`` (the Human Phenotype Ontology's rare-disease annotations). The service serves the
HPO world as a provider (``PURSUIT_PROVIDER=hpo``); the research benchmarks play both.
"""
