"""A clock the test moves by hand (``clock.now = 12.5``), for code that takes a time source."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
