"""Weights: the pinned manifest, the user cache, downloads and checkpoint loading."""
