"""Mail in: the SMTP and IMAP doors, the reader, the inbox sweep."""
