"""Rows and vectors: the SQLite pool (the truth) and the Chroma index. Never loads a model, never sees a socket."""
