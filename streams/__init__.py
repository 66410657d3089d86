"""revwatch's streaming edge: records, parsers, sessions, the Faust app, collector and CLI."""

from streams import native

native.enable(__path__)
