"""Seeing: SAM (segment-anything) masks, boxes, Grounding DINO (text → boxes), CLIP zero-shot ranking, InsightFace
face analysis, pose and depth for ControlNet hints, edges, captions, image similarity and labels."""
