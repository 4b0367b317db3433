"""Test support: a throwaway PostgreSQL server and a milter-protocol client."""
