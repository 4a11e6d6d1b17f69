"""The door to the systems of record: signed webhooks and the applier, over HTTP."""
