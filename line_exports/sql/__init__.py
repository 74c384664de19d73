"""SQL for migrated Treasure Data queries: TD's functions on the embedded engine
(:mod:`.td_functions`, semantics in :mod:`.td_time`) and dialect translation
(:mod:`.dialect`)."""

from line_exports.sql.td_functions import TD_FUNCTIONS, register_td_functions

__all__ = ["TD_FUNCTIONS", "register_td_functions"]
