"""modelswap: serve many local AI models from one machine by swapping upstream servers on demand."""

__version__ = "0.1.0"
