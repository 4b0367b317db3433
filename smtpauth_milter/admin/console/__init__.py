"""The web console (issue 22): its own process, the same store and editing code as the CLI."""
