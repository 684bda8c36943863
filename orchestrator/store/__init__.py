"""The store: run documents, their history, wait records, node logs, workflow versions and
user lists in MongoDB.

Below the engine: it imports the definitions and the base modules only.
"""
