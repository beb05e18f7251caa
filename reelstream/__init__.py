"""reelstream: streaming recommendations and comment moderation on Kafka + Faust."""

from importlib.metadata import version

__version__ = version("reelstream")
