"""Jinja templates of the notices Countersign mails (see gateway/mail_out/render.py).

Layout: ``base.txt.j2`` / ``base.html.j2`` hold the frame every notice shares,
``parts.txt.j2`` / ``parts.html.j2`` the request summary several kinds show,
and ``{language}/`` the words: ``words.j2`` (contact types, dates, subjects)
and one ``{kind}.txt.j2`` and ``{kind}.html.j2`` per kind. ``web/`` belongs
to the confirmation page, not to the notices.
"""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent
