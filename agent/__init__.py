"""powersync agent: configuration, the power-sync service, power actions, Nova notifier, CLI.

Exceptions: every error meant for a user derives from :class:`agent.errors.AgentError`.
"""
