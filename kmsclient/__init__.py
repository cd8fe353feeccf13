"""kmsclient."""
