"""jaxposter: learn a movie's genres from its poster, with JAX and Flax."""

__version__ = "0.1.0"
