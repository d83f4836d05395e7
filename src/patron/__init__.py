"""Patron: retail customer-data and membership platform."""

__version__ = "0.1.0"
