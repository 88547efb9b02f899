"""Pipeline specs (pydantic, at the edge) and pure planning."""
