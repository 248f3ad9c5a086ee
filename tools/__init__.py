"""Tools the pack ships but never imports: the opt-in model downloader (`scripts/models`) with its manifest,
progress and safety checks, and the environment doctor (`scripts/doctor`). Standard library only at import, so
they run with any Python; they read the pack's catalogue and folder table from models.core."""
