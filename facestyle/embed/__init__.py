"""Face embedders: aligned chip -> L2-normalised vector."""

from facestyle.embed.embedder import Embedder, load_embedder

__all__ = ["Embedder", "load_embedder"]
