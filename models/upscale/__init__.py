"""Upscaling: every model spandrel's core architectures load (arch.py), run by VisionKit's tile engine
(tiles.py, over the windows a tile_plan.TilePlan lays out). Import from those modules directly."""
