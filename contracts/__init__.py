"""The contracts at the bottom of the stack: event schemas and the stored history row. Imports nothing
of ours, so every layer (models, streams, lab) can depend on it."""
