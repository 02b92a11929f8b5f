"""The power-sync service: the rules (:mod:`.policy`), the passes (:mod:`.service`, :mod:`.lanes`,
:mod:`.report`), power actions (:mod:`.actions`, :mod:`.power`), the daemon (:mod:`.daemon`) and
store housekeeping (:mod:`.housekeeping`)."""
