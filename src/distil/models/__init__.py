"""Model loading, student construction and the per-family architecture table."""
