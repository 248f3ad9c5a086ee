"""VisionKit engines: no ComfyUI import at module level; they run standalone too."""
