"""The ``powersync`` command line: the dispatcher (:mod:`.main`), one module per command group,
and the helpers they share (:mod:`.common`)."""
