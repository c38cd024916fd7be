"""Structure-aware cardiac detector: boxes, tracks, structure tokens and measurements."""
