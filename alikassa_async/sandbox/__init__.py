"""Local AliKassa sandbox (filled in by the sandbox work)."""
