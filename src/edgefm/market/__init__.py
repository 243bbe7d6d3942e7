"""Markets around edge foundation models: numpy/scipy only, never torch (ARCHITECTURE.md)."""
