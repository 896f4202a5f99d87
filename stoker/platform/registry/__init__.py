"""The registry: functions, their immutable versions, aliases, and the bundle store."""
