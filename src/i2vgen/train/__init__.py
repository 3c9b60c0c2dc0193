"""Training: video-text data, the base and refinement trainers, checkpoints and resume."""
