"""unnoise: paint images out of pure noise."""

__version__ = "0.1.0"
