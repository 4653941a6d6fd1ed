"""Tooling around the service, not part of it: the local CPU vLLM installer and launcher
(``local_llm``), its GGUF converter (``convert_gguf``), and a stub LLM server for capacity
work and the gateway's tests (``stub_llm``). The service never imports this package.
"""
