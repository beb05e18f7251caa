"""reelstream: streaming recommendations and comment moderation on Kafka + Faust."""

__version__ = "0.1.0"
