"""Vector index of item factors: exact and IVF maximum-inner-product search keyed by video id.

Import from the modules (`indexer.factory.make_index`, `indexer.base.VectorIndex`): this package is imported
by the settings and the CLI, which must not pay for importing FAISS.
"""
