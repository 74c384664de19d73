"""LINE OA streaming import: a webhook receiver that loses no event, landed by Dagster.

``app`` receives and spools (SQLite WAL, fsync'd before the 200), ``landing`` moves spooled
requests into the raw and events tables, ``assets`` wraps that as Dagster assets, ``cli`` adds
``line-exports webhook serve | new-source | land``.
"""
