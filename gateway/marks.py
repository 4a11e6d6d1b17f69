"""Marks that every notice carries, shared by the composer and the reply reader.

The reply reader treats a line holding NOTICE_LINE_PREFIX as the start of a
quoted copy of one of our own notices, even when a client quoted it without
any marker.
"""

SUBJECT_PREFIX = "[Countersign #{request_id}]"
NOTICE_LINE_PREFIX = "Countersign request #"
