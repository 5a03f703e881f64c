"""The one exception type the project raises for bad input."""


class MEIConfigError(ValueError):
    """A config value, component spec or input file is wrong.

    The message always names the offending config key (dotted, e.g. ``methods.default.config.stopper``)
    or file, so a user can find and fix it without reading a traceback.
    """
