"""The error a config file's problem raises, worded for the person who wrote the file: its own
module, below both config.py and the rules config.py reads (browser.py), so neither imports the other
back."""


class ConfigError(ValueError):
    """A problem in the config file, worded for the person who wrote it."""
