"""Rate limits and per-tenant budgets of concurrent LLM work."""
