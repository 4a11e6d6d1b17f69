"""The web door: the link's page, the API, the account pages, the app."""
