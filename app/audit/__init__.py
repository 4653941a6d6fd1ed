"""Audit trail: who did what to which resource, with no patient text."""
