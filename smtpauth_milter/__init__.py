"""smtpauth-milter: refuse mail sent as a local user without logging in as that user."""

__version__ = "0.1.0"
