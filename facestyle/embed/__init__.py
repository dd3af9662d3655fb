"""Face embedders (aligned chip -> L2-normalised vector) and the feature service built on them.

* :mod:`.embedder`: the :class:`Embedder` interface and registered networks;
* :mod:`.checkpoint`: a base network plus a trained head, saved by ``facestyle train``;
* :mod:`.heads`: those small heads;
* :mod:`.loader`: :func:`load_embedder`, a name or a checkpoint file -> an :class:`Embedder`;
* :mod:`.features`: files -> chosen face -> embedding, cached (what training, evaluation, heads and
  the CLI all use).
"""

from facestyle.embed.embedder import Embedder
from facestyle.embed.loader import load_embedder

__all__ = ["Embedder", "load_embedder"]
