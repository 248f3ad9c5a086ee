"""Tools the pack ships but never imports: the opt-in model downloader (`scripts/models`: downloader.py, with
download_fetch, download_progress, download_safety and workflow_models) and the environment doctor
(`scripts/doctor`). Standard library only at import, so they run with any Python; they read the pack's
catalogue (URLs and checksums included) and folder table from models.core."""
