"""Telling Nova about power changes: the ``[nova]`` section (:mod:`.config`), Keystone v3
(:mod:`.keystone`), Nova's ``power-update`` events (:mod:`.client`) and the outbox drainer
(:mod:`.notifier`)."""
