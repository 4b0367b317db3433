"""Administration: the command line, doctor, check's explanations and the man page."""
