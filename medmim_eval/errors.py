"""Errors a user can cause. Each renders as one plain line; tracebacks are for bugs."""


class MedmimError(Exception):
    """A problem with the user's input, data or environment, with the fix in its message."""


class UnknownNameError(MedmimError):
    """An adapter, task, builder or recipe name that is not registered."""


class DataError(MedmimError):
    """Benchmark data that cannot be loaded; the message names the file and item."""


class PluginError(MedmimError):
    """A plugin that failed to load or registered something invalid."""


class MissingBackendError(MedmimError):
    """An adapter's optional backend is not installed; the message names the extra."""
