"""The operator's look: templates.dir and the brand, worn by the notices and the pages alike.

Beside the doors, not in one: mail_out renders the notices with it, web the pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from countersign.config import Config


@dataclass(frozen=True)
class Look:
    """The operator's: a folder of overriding templates, and the brand the notices wear.

    The marks of gateway/marks.py stay as they are whatever the brand: the reply
    reader cuts a quoted notice at them.
    """

    template_dir: str = ""  # files here win over templates/ of the same path
    brand_name: str = "Countersign"
    support_address: str = ""
    logo_url: str = ""

    @property
    def brand(self) -> dict[str, str]:
        return {
            "name": self.brand_name or "Countersign",
            "support": self.support_address,
            "logo": self.logo_url,
        }


BUILT_IN = Look()


def look_of(config: Config) -> Look:
    return Look(
        template_dir=config.templates.dir,
        brand_name=config.mail.brand_name,
        support_address=config.mail.support_address,
        logo_url=config.mail.logo_url,
    )
