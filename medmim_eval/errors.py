"""Errors a user can cause. Each renders as one plain line; tracebacks are for bugs."""
from __future__ import annotations

from pathlib import Path


class MedmimError(Exception):
    """A problem with the user's input, data or environment, with the fix in its message."""


class UnknownNameError(MedmimError):
    """An adapter, task, builder or recipe name that is not registered."""


class DataError(MedmimError):
    """Benchmark data that cannot be loaded; the message names the file and item."""


class PluginError(MedmimError):
    """A plugin that failed to load or registered something invalid."""


class ContractError(MedmimError):
    """A plugin broke the contract it implements (an adapter without ``aclose``, a ``generate`` that
    returned fewer results than requests or a ``str`` instead of a result). A bug in the plugin,
    which a rerun cannot fix: the message names the plugin and what it got wrong."""


class MissingBackendError(MedmimError):
    """An adapter's optional backend is not installed; the message names the extra."""


class TooManyImagesError(MedmimError):
    """A sample has more images than the model accepts; nothing was sent (images are never dropped).

    Adapters raise it per sample (returned in ``generate``'s list); the runner records it as an error
    of this type and views count such samples in their footer.
    """

    def __init__(self, n_images: int, max_images: int, model: str = "") -> None:
        self.n_images, self.max_images = n_images, max_images
        who = f"{model} takes" if model else "the model takes"
        super().__init__(f"{n_images} images, but {who} at most max_images={max_images}; nothing was sent "
                         f"(images are never dropped; raise max_images if the model can take more)")


def os_error_reason(exc: OSError, path: Path | None = None) -> str:
    """Why ``exc`` happened on ``path``, in words: a file standing where a folder of the path must
    be (the system only says "Not a directory"), else the system's own text."""
    if path is not None:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return exc.strerror or type(exc).__name__


class TooFewImagesError(MedmimError):
    """A sample has fewer images than the model needs (``@noimage`` on a model that needs one); nothing was sent.

    Flagged and counted exactly like :class:`TooManyImagesError` (see :mod:`medmim_eval.flags`).
    """

    def __init__(self, n_images: int, min_images: int, model: str = "") -> None:
        self.n_images, self.min_images = n_images, min_images
        who = f"{model} needs" if model else "the model needs"
        super().__init__(f"{n_images} images, but {who} at least min_images={min_images}; nothing was sent")
