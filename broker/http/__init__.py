"""The HTTP layer: translates requests into calls on the core and results into responses."""
