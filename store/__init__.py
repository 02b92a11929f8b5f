"""powersync store: node inventory, power state, locks, history and the notification outbox."""
