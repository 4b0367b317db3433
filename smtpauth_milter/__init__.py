"""smtpauth-milter: refuse mail sent as a local user without logging in as that user."""

__version__ = "0.3.0.dev0"
