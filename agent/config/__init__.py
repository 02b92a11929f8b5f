"""The agent's configuration: agent.toml (:mod:`.options`), its typed reader (:mod:`.reader`),
secrets from files and the environment (:mod:`.secrets`), and inventory files for
``powersync node import`` (:mod:`.inventory`)."""
