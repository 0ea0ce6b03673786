"""pytest fixtures for the sandbox (being written)."""
