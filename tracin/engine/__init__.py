"""The TracIn engine: per-sample gradients, projections, features, the TracIn facade and streaming top-k."""
