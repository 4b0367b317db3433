"""Benchmarks of smtpauth-milter against a no-op pymilter milter (issue 5); see README.md."""
