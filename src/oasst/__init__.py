"""oasst: a complete, self-hostable Open Assistant."""

__version__ = "0.1.0"
