"""Guardian DNS: a parental-control DNS filter for home routers and school networks."""

__version__ = "0.1.0"
