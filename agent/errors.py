"""The agent's exception tree.

AgentError                     root: the CLI prints it as one line and exits non-zero
├── ConfigError                bad configuration: names the file and the key
├── SecretError                a secret file or variable is missing, unreadable or unsafe
├── NodeError                  an unknown, locked or unsuitable node for a command
└── NotificationError          Nova / Keystone setup or delivery problem that must be reported
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent reports to a user."""


class ConfigError(AgentError):
    """The configuration is invalid; the message names the file and the key."""


class SecretError(AgentError):
    """A secret could not be read safely; the message never contains the secret."""


class NodeError(AgentError):
    """A node named on the command line is unknown, locked or in the wrong state."""


class NotificationError(AgentError):
    """Nova or Keystone refused the agent in a way an operator must fix."""
