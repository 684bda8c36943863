"""Workflow definitions: the spec's models, workflow files, templates, secrets' names.

The lowest layer above `constants`, `errors` and `settings`: nothing here touches MongoDB or Celery.
"""
