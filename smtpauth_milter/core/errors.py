"""The errors a user can cause or meet; each carries one clear line."""


class SmtpauthError(Exception):
    """Base class: the message is shown to the user as one line."""


class SettingError(SmtpauthError):
    """A setting key or value that is not valid."""


class StoreError(SmtpauthError):
    """The store cannot be reached, read, or is at the wrong schema."""


class ConfigError(SmtpauthError):
    """A bad configuration file or option."""


class StoreMissing(StoreError):
    """The store does not exist (a SQLite file that is not there): never created by reading."""


class SchemaError(StoreError):
    """The store's schema is one this version must not use: behind, or newer and not
    readable by it. Unlike an outage, the milter does not ride it out on its last
    snapshot: it tempfails at once."""
