"""Named queues and the `queue` trigger (an event source mapping with SQS semantics).

    messages.py  what a message is, its limits and attributes
    store.py     the queues in Redis: send, receive, delete, dead-letter, redrive, purge
    records.py   the SQS-shaped records a consumer gets, and its batchItemFailures
    mapping.py   the `[[triggers]] type = "queue"` poller that invokes a function per batch
"""

from stoker.platform.manifest import register_trigger_type
from stoker.triggers.base import register_source
from stoker.triggers.queue.mapping import QueueSource, validate

register_trigger_type("queue", validate)
register_source("queue", QueueSource)
