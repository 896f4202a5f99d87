"""Triggers: sources that publish envelopes (http, queue, files, cron, dbchanges).

Importing this package registers every trigger type's manifest validator with
stoker.platform.manifest, so that `[[triggers]]` entries are checked at deploy.
"""

from stoker.triggers import bridges, cron, dbchanges, files, http, queue  # noqa: F401  (each registers its type)
