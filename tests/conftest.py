"""Shared pytest set-up. Fixture modules live beside this file and are listed here."""
pytest_plugins: list[str] = [
    "tests.fixtures_daemon",
    "tests.fixtures_xmpp",
    "tests.fixtures_browser",
    "tests.fixtures_container",
]
