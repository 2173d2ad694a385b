"""One exception type for bad user input, reported as a single line by the entry points."""


class ConfigError(ValueError):
    """A configuration or input value is outside what is allowed; the message names both."""


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (``high=None`` means unbounded)."""
    bad = value != value or value < low or (high is not None and value > high)
    if bad:
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={value} is out of range; allowed: {allowed}")
