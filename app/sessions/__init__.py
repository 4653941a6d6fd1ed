"""Interview sessions: persistence and orchestration of the engine over a session's life."""
