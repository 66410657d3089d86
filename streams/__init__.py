"""revwatch's streaming edge: records, parsers, sessions, the Faust app, collector and CLI."""
