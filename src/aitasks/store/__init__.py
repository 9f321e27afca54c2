"""The store of record: job history, documents, usage and keys in SQL (SQLite by default, PostgreSQL).

Redis stays the broker and the hot cache; what must outlive it is written here. Finished jobs arrive
through a Redis Stream written in the job's atomic end (``history_end.lua``) and read by the recorder
(``recorder.py``). See docs/history.md.
"""
