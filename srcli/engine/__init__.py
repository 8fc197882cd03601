"""The inference engine: device choice, value ranges, padding, tiling, self-ensemble."""
