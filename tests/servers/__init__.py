"""Real servers (Dovecot IMAP, an aiosmtpd SMTP sink) for the test suite.

The pytest fixtures live in :mod:`tests.servers.fixtures`.
"""
