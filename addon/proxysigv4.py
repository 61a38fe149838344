"""mitmproxy script: `mitmdump -s addon/proxysigv4.py --set proxysigv4_config=proxysigv4.yaml`.

The code lives in the proxysigv4_core package (installed by setup.cfg); this file only loads it.
"""

from proxysigv4_core import ProxySigV4

addons = [ProxySigV4()]
