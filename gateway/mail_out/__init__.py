"""Mail out: render, compose, deliver (SMTP relay or Maildir), record."""
