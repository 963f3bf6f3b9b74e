"""socksify's bootstrap directory: put first on PYTHONPATH, its `sitecustomize` installs the
SOCKS socket in every Python program started below it (see `clients.socksify`)."""
