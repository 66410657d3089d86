"""Import ``streams`` first, so its loader can put the compiled build of both packages in place
before any test imports a ``detectors`` module (see :mod:`streams.native`)."""

import streams  # noqa: F401
