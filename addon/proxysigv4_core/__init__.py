"""proxysigv4: an AWS SigV4 signing reverse proxy as a mitmproxy addon."""

from .addon import ProxySigV4

__all__ = ["ProxySigV4"]
