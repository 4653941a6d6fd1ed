"""API keys, tenants and scopes."""
