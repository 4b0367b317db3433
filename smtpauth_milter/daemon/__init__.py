"""The daemon: the pymilter adapter, the snapshot refresh thread, the server,
metrics and log set-up."""
