"""The `paddock` command line: start sessions, follow them, answer them. See docs/cli.md."""
